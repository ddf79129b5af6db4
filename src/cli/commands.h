#pragma once
// Each subcommand registers itself on the app: options, help text and a callback that calls one library function.
#include <CLI/CLI.hpp>

namespace fm {

void add_train_command(CLI::App& app);
void add_sample_command(CLI::App& app);
void add_config_command(CLI::App& app);
void add_eval_nll_command(CLI::App& app);
void add_fid_commands(CLI::App& app);
void add_export_command(CLI::App& app);
void add_import_command(CLI::App& app);
void print_version();

}  // namespace fm
