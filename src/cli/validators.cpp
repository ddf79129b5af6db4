// Option checks and parsing shared by the subcommands, so that every bad argument reads the same way.
#include <algorithm>
#include <cctype>
#include <sstream>

#include "cli/commands.h"

namespace fm {

namespace {
// A number bounded below: "must be >= 1, got 0" (or "> 0"), where CLI11's Range would print its 300-digit maximum.
CLI::Validator bounded_below(double min, bool strict) {
  std::ostringstream bound;
  bound << (strict ? "> " : ">= ") << min;
  const std::string b = bound.str();
  return CLI::Validator(
      [min, strict, b](std::string& s) -> std::string {
        double v = 0;
        if (!CLI::detail::lexical_cast(s, v)) return "'" + s + "' is not a number";
        return (strict ? v > min : v >= min) ? std::string() : "must be " + b + ", got " + s;
      },
      "NUMBER " + b);
}
}  // namespace

CLI::Validator at_least(double min) { return bounded_below(min, false); }
CLI::Validator greater_than(double min) { return bounded_below(min, true); }

CLI::Validator seed_value() {
  return CLI::Validator(
      [](std::string& s) -> std::string {
        if (s.empty() || !std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); }))
          return "must be an integer >= 0, got '" + s + "'";
        return "";
      },
      ">= 0");
}

void parse_command_line(CLI::App& app, int argc, char** argv) {
  // CLI11 reports a mistyped subcommand as "A subcommand is required"; name it and the commands instead.
  if (argc > 1 && argv[1][0] != '-') {
    std::string known;
    bool found = false;
    for (const auto* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
      known += (known.empty() ? "" : ", ") + sub->get_name();
      found = found || sub->check_name(argv[1]);
    }
    if (found) {
      app.parse(argc, argv);
      return;
    }
    throw CLI::ExtrasError("unknown command '" + std::string(argv[1]) + "' (commands: " + known + ")",
                           CLI::ExitCodes::ExtrasError);
  }
  app.parse(argc, argv);
}

}  // namespace fm
