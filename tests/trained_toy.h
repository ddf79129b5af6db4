#pragma once
// The demo model (configs/toy2d.json, trained in full) for the tests that judge a trained model. It is trained once
// per build of fm and test device and shared through a cache directory, since several tests in separate processes
// need it.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <filesystem>

#include "config/config.h"
#include "test_util.h"
#include "checkpoint/checkpoint.h"
#include "train/trainer.h"

namespace fm::test {

inline std::string trained_toy2d_checkpoint() {
  struct stat st{};
  ::stat(fm_binary().c_str(), &st);  // a new build of fm gets a new cache
  const std::string tag = device().str() + "_" + std::to_string(static_cast<long long>(st.st_mtime));
  const std::string dir = (std::filesystem::temp_directory_path() / ("fm_test_toy2d_" + tag)).string();
  int fd = ::open((dir + ".lock").c_str(), O_CREAT | O_RDWR, 0644);
  ::flock(fd, LOCK_EX);
  auto cfg = load_config(source_dir() + "/configs/toy2d.json", {"device=" + device_spec()});
  std::string ckpt = dir + "/checkpoints/" + checkpoint_name(cfg.train.steps);
  if (!std::filesystem::exists(ckpt)) {
    remove_tree(dir);
    train(cfg, {dir, ""});
  }
  ::flock(fd, LOCK_UN);
  ::close(fd);
  return ckpt;
}

}  // namespace fm::test
