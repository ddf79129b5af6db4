// fm: flow matching, trained from C++. The CLI is thin: parse, call one library function, map errors to exit codes
// (0 success, 2 bad usage / config / input file, 75 stopped by a signal with state saved, 1 anything else).
#include <cstdio>
#include <iostream>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include "cli/commands.h"
#include "util/device.h"
#include "util/error.h"
#include "util/preemption.h"
#include "util/printable.h"

namespace fm {
void print_version() {
  std::cout << "fm " << FM_VERSION << "\n";
  std::cout << "LibTorch " << TORCH_VERSION << "\n";
  bool cuda = torch::cuda::is_available();
  std::cout << "CUDA available: " << (cuda ? "yes" : "no");
  if (cuda) std::cout << " (" << torch::cuda::device_count() << " device(s))";
  std::cout << "\ncuDNN available: " << (torch::cuda::cudnn_is_available() ? "yes" : "no") << "\n";
  for (int64_t i = 0; cuda && i < static_cast<int64_t>(torch::cuda::device_count()); ++i)
    std::cout << "  cuda:" << i << " " << cuda_device_summary(i) << "\n";
}
}  // namespace fm

int main(int argc, char** argv) {
  auto logger = spdlog::stderr_color_st("fm");
  logger->set_pattern("[%H:%M:%S] %v");
  spdlog::set_default_logger(logger);

  CLI::App app{"fm: flow matching generative models (Lipman et al. 2022), trained and evaluated from C++.\n"
               "Time convention: noise at t=0, data at t=1."};
  app.set_version_flag("--version", [] { fm::print_version(); return std::string(); }, "fm, LibTorch and CUDA versions");
  app.require_subcommand(1);
  fm::add_train_command(app);
  fm::add_sample_command(app);
  fm::add_config_command(app);
  fm::add_eval_nll_command(app);
  fm::add_fid_commands(app);
  fm::add_evaluate_command(app);
  fm::add_ema_command(app);
  fm::add_export_command(app);
  fm::add_import_command(app);
  fm::add_bench_command(app);
  fm::add_reflow_command(app);

  // Every message goes through printable(): it may quote bytes of a hostile input file.
  try {
    fm::parse_command_line(app, argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return 0;
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "fm: error: %s (see fm --help)\n", fm::printable(e.what()).c_str());
    return 2;
  } catch (const fm::StopRequested& e) {
    if (e.state_saved)
      std::fprintf(stderr, "fm: stopped by signal %d with its state saved; run again with --resume to continue\n",
                   e.signal);
    else
      std::fprintf(stderr, "fm: stopped by signal %d; nothing was saved, a rerun starts over\n", e.signal);
    return fm::kExitResumable;
  } catch (const fm::InputError& e) {
    std::fprintf(stderr, "fm: error: %s\n", fm::printable(e.what()).c_str());
    return 2;
  } catch (const c10::Error& e) {
    std::fprintf(stderr, "fm: error: %s\n", fm::printable(e.what_without_backtrace()).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "fm: error: %s\n", fm::printable(e.what()).c_str());
    return 1;
  }
  return 0;
}
