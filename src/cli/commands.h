#pragma once
// Each subcommand registers itself on the app: options, help text and a callback that calls one library function.
#include <CLI/CLI.hpp>

#include <chrono>
#include <functional>

#include "config/choices.h"
#include "config/config.h"

namespace fm {

void add_train_command(CLI::App& app);
void add_sample_command(CLI::App& app);
void add_config_command(CLI::App& app);
void add_eval_nll_command(CLI::App& app);
void add_fid_commands(CLI::App& app);
void add_evaluate_command(CLI::App& app);
void add_ema_command(CLI::App& app);
void add_export_command(CLI::App& app);
void add_import_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_reflow_command(CLI::App& app);
void print_version();

// How long the ranks of sample, eval-nll and fid-features (which read no config) wait for each other: the default of
// the config key dist.timeout_s.
inline std::chrono::milliseconds dist_timeout() {
  return std::chrono::milliseconds(static_cast<int64_t>(DistConfig{}.timeout_s * 1000));
}

// `sets` with "device=DEVICE" appended when `device` is given: a command's --device overrides the config's device.
inline std::vector<std::string> with_device(std::vector<std::string> sets, const std::string& device) {
  if (!device.empty()) sets.push_back("device=" + device);
  return sets;
}

// Range checks whose message reads "must be >= 1" rather than CLI11's "not in range 1 to 1.79769e+308".
CLI::Validator at_least(double min);
CLI::Validator greater_than(double min);
// A seed: a non-negative integer (an unsigned option would otherwise take -1 as 2^64 - 1).
CLI::Validator seed_value();
// Options that take names of choice E (config/choices.h): their help lists the names ("a | b | c") with the default,
// and a name that is none of them is refused with the list and the closest name.
template <class E>
CLI::Validator choice_validator() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        auto v = choice_from<E>(s);
        if (!v) return not_one_of(s, choice_names<E>());
        s = std::to_string(static_cast<int>(*v));  // what CLI11 converts into the enum
        return "";
      },
      "", "choice");
}
template <class E>
CLI::Option* add_choice(CLI::App* cmd, const std::string& flags, E& value, const std::string& help,
                        bool show_default = true) {
  auto* opt = cmd->add_option(flags, value, help + ": " + choice_list<E>(" | "))->transform(choice_validator<E>());
  if (show_default) opt->default_str(name_of(value));
  return opt;
}
// Several names, e.g. comma-separated with ->delimiter(',').
template <class E>
CLI::Option* add_choice(CLI::App* cmd, const std::string& flags, std::vector<E>& values, const std::string& help,
                        bool show_default = true) {
  auto* opt = cmd->add_option(flags, values, help + ": " + choice_list<E>(" | "))->transform(choice_validator<E>());
  if (show_default) {
    std::string d;
    for (const auto& v : values) d += (d.empty() ? "" : ",") + std::string(name_of(v));
    opt->default_str(d);
  }
  return opt;
}

struct GenerationOptions;
// The options fm sample and fm reflow share (sample/generation.h), into `o`; returns what the command's callback calls
// first, which moves the solver options given (and only those) into o.solve.
std::function<void()> add_generation_options(CLI::App* cmd, GenerationOptions& o);

// Parses the command line; an unknown subcommand names itself and the known ones.
void parse_command_line(CLI::App& app, int argc, char** argv);

}  // namespace fm
