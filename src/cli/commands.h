#pragma once
// Each subcommand registers itself on the app: options, help text and a callback that calls one library function.
#include <CLI/CLI.hpp>

#include <chrono>

#include "config/config.h"

namespace fm {

void add_train_command(CLI::App& app);
void add_sample_command(CLI::App& app);
void add_config_command(CLI::App& app);
void add_eval_nll_command(CLI::App& app);
void add_fid_commands(CLI::App& app);
void add_evaluate_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_import_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void print_version();

// How long the ranks of sample, eval-nll and fid-features (which read no config) wait for each other: the default of
// the config key dist.timeout_s.
inline std::chrono::milliseconds dist_timeout() {
  return std::chrono::milliseconds(static_cast<int64_t>(DistConfig{}.timeout_s * 1000));
}

// Range checks whose message reads "must be >= 1" rather than CLI11's "not in range 1 to 1.79769e+308".
CLI::Validator at_least(double min);
CLI::Validator greater_than(double min);
// A seed: a non-negative integer (an unsigned option would otherwise take -1 as 2^64 - 1).
CLI::Validator seed_value();
// Parses the command line; an unknown subcommand names itself and the known ones.
void parse_command_line(CLI::App& app, int argc, char** argv);

}  // namespace fm
