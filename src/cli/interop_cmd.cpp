#include <spdlog/spdlog.h>

#include "cli/commands.h"
#include "interop/model_export.h"
#include "interop/model_import.h"

namespace fm {

void add_export_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "export", "Write a checkpoint's weights as .safetensors (U-Net under torchcfm's UNetModelWrapper names)");
  auto o = std::make_shared<ExportOptions>();
  cmd->add_option("--checkpoint", o->checkpoint, "checkpoint (.pt) written by fm train or fm import")->required();
  cmd->add_option("--out", o->out, "the .safetensors file to write")->required();
  add_choice(cmd, "--weights", o->weights, "which weights of the checkpoint");
  cmd->callback([o] {
    auto r = export_safetensors(*o);
    spdlog::info("wrote {} ({} tensors, {} parameters, {} names)", o->out, r.tensors, r.parameters, r.names);
  });
}

void add_import_command(CLI::App& app) {
  auto* cmd = app.add_subcommand(
      "import", "Turn weights trained elsewhere (torchcfm checkpoint, .safetensors) into an fm checkpoint");
  auto o = std::make_shared<ImportOptions>();
  cmd->add_option("--from", o->from, "torchcfm (torchcfm's names) | fm (fm's own names)")
      ->check(CLI::IsMember({"torchcfm", "fm"}))
      ->capture_default_str();
  cmd->add_option("--weights", o->weights,
                  "torch.save file (.pt/.pth: net_model/ema_model/step, or a bare state_dict) or .safetensors")
      ->required();
  cmd->add_option("--config", o->config, "fm config describing the network (optional for files from fm export)");
  cmd->add_option("--set", o->sets, "override a config key, e.g. --set model.unet.dropout=0.1 (repeatable)")
      ->take_all();
  cmd->add_option("--shape", o->shape, "sample shape, e.g. --shape 3 32 32 (default: from the file or the config's data)")
      ->expected(1, 3);
  cmd->add_option("--out", o->out, "the fm checkpoint (.pt) to write")->required();
  cmd->callback([o] {
    auto r = import_weights(*o);
    spdlog::info("wrote {}: step {}, {} parameters, {}", o->out, r.step, r.parameters,
                 r.separate_ema ? "raw and EMA weights" : "the same weights as raw and EMA");
  });
}

}  // namespace fm
