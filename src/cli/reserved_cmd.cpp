#include <stdexcept>

#include "cli/commands.h"

namespace fm {

// Names reserved for the evaluation commands so that scripts written against them fail loudly rather than oddly.
static void reserve(CLI::App& app, const char* name, const char* what) {
  auto* cmd = app.add_subcommand(name, std::string(what) + " (not in this build yet)");
  cmd->allow_extras();
  cmd->callback([name] { throw std::runtime_error(std::string("fm ") + name + " is not available in this build yet"); });
}

<<<<<<< HEAD
void add_fid_commands(CLI::App& app) {
  reserve(app, "fid-features", "FID Inception statistics of a set of images");
  reserve(app, "fid", "Frechet Inception Distance between two sets");
}
=======
void add_eval_nll_command(CLI::App& app) { reserve(app, "eval-nll", "Exact likelihood in bits/dim"); }
>>>>>>> fid

}  // namespace fm
