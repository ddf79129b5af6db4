// The checkpoint room: the seal (checksum trailer), atomic and durable writes, the checkpoint directory's branches,
// and the commands that read checkpoints refusing a damaged one.
#include <sys/mount.h>
#include <sys/stat.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "checkpoint/checkpoint.h"
#include "train/adamw.h"
#include "checkpoint/seal.h"
#include "data/batch_sampler.h"
#include "io/file_util.h"
#include "nn/velocity_field.h"
#include "test_util.h"
#include "util/error.h"

using fm::test::run;
using fm::test::TempDir;

namespace {

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}
void flip_byte(const std::string& path, size_t offset) {
  auto b = read_bytes(path);
  ASSERT_LT(offset, b.size());
  b[offset] = static_cast<char>(b[offset] ^ 0x10);
  write_bytes(path, b);
}

std::string sealed(const std::string& payload) {
  fm::SealWriter w;
  w.update(payload.data(), payload.size() / 2);  // streamed in pieces, as the archive is
  w.update(payload.data() + payload.size() / 2, payload.size() - payload.size() / 2);
  auto t = w.trailer();
  return payload + std::string(t.data(), t.size());
}

fm::Config tiny_mlp_config() {
  fm::Config c;
  c.device = "cpu";
  c.data.path = "eight_gaussians";
  c.model.mlp.hidden = 16;
  c.model.mlp.depth = 1;
  return c;
}

// A small but real checkpoint: a 2-D MLP, its EMA and AdamW state after one step.
void write_small_checkpoint(const std::string& path, int64_t step = 7) {
  auto cfg = tiny_mlp_config();
  auto model = fm::make_velocity_field(cfg.model, {2});
  auto ema = fm::make_velocity_field(cfg.model, {2});
  fm::AdamW opt(model->parameters(), {0.9, 0.999, 1e-8, 0.0});
  auto loss = (*model)(torch::rand({4}), torch::randn({4, 2}), {}).square().mean();
  loss.backward();
  opt.step(1e-3);
  fm::save_checkpoint(path, {&cfg, step, {2}, {"toy:eight_gaussians", 0, 0}, model.get(), ema.get(), &opt, nullptr});
}

using fm::test::fm_cmd;

std::string tiny_train_args(const std::string& out) {
  return "train --config " + fm::test::source_dir() + "/configs/toy2d.json --device cpu --out " + out +
         " --set model.mlp.hidden=16 model.mlp.depth=1 train.batch_size=32 train.warmup_steps=0 train.log_every=10"
         " train.ckpt_every=10 train.keep_last=1000 sample.n=50 sample.steps=2";
}

// A tmpfs of `bytes` mounted at `dir` for the life of the object, where the system allows it (the suite runs as root).
class TinyTmpfs {
 public:
  TinyTmpfs(const std::string& dir, size_t bytes) : dir_(dir) {
    std::string opts = "size=" + std::to_string(bytes);
    mounted_ = ::mount("tmpfs", dir.c_str(), "tmpfs", 0, opts.c_str()) == 0;
    if (!mounted_) error_ = std::strerror(errno);
  }
  ~TinyTmpfs() {
    if (mounted_) ::umount2(dir_.c_str(), MNT_DETACH);
  }
  bool mounted() const { return mounted_; }
  const std::string& error() const { return error_; }

 private:
  std::string dir_, error_;
  bool mounted_ = false;
};

}  // namespace

TEST(Seal, TrailerHoldsLengthAndXxh3OfThePayload) {
  // XXH3-64 of the empty input is 0x2D06800538D394C2 (xxHash's own test vectors).
  EXPECT_EQ(fm::seal_hash("", 0), 0x2D06800538D394C2ull);
  const std::string payload = "a payload of forty-one bytes, more or less";
  const std::string file = sealed(payload);
  ASSERT_EQ(file.size(), payload.size() + fm::kSealSize);
  EXPECT_EQ(file.substr(payload.size(), 8), "FMCKSUM\n");
  uint64_t length = 0, hash = 0;
  for (int i = 7; i >= 0; --i) {
    length = length << 8 | static_cast<unsigned char>(file[payload.size() + 16 + i]);
    hash = hash << 8 | static_cast<unsigned char>(file[payload.size() + 24 + i]);
  }
  EXPECT_EQ(length, payload.size());
  EXPECT_EQ(hash, fm::seal_hash(payload.data(), payload.size()));
  EXPECT_EQ(fm::verify_seal(file.data(), file.size(), "x.pt"), payload.size());
}

TEST(Seal, EveryFlippedBitTruncationOrAppendIsCaught) {
  const std::string file = sealed(std::string("some archive bytes\0with a zero", 30));
  for (size_t i = 0; i < file.size(); ++i)
    for (int bit = 0; bit < 8; ++bit) {
      std::string bad = file;
      bad[i] = static_cast<char>(bad[i] ^ (1 << bit));
      EXPECT_THROW(fm::verify_seal(bad.data(), bad.size(), "x.pt"), fm::CorruptCheckpoint) << "byte " << i;
    }
  for (size_t n = 0; n < file.size(); ++n)
    EXPECT_THROW(fm::verify_seal(file.data(), n, "x.pt"), fm::CorruptCheckpoint) << "truncated to " << n;
  std::string longer = file + "x";
  EXPECT_THROW(fm::verify_seal(longer.data(), longer.size(), "x.pt"), fm::CorruptCheckpoint);
}

TEST(Checkpoint, RoundTripsAndRecordsTheData) {
  TempDir d;
  write_small_checkpoint(d / "c.pt", 7);
  fm::CheckpointReader r(d / "c.pt", torch::kCPU);
  EXPECT_EQ(r.step(), 7);
  EXPECT_EQ(r.data().name, "toy:eight_gaussians");
  EXPECT_EQ(r.config().model.mlp.hidden, 16);
  auto m = fm::make_velocity_field(r.config().model, r.sample_shape());
  r.load_module("model", *m);
  // Nothing but the renamed file is left behind.
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(d.str())) files += e.is_regular_file();
  EXPECT_EQ(files, 1);
}

// A checkpoint restores the CPU's stream, whatever the device count of the machine that wrote it.
TEST(Checkpoint, RestoresTheStreamItWasWrittenWith) {
  TempDir d;
  torch::manual_seed(5);
  torch::randn({3});
  write_small_checkpoint(d / "c.pt");  // its own draws come before the save; the stream is saved as it is then
  const auto next = torch::randn({8});
  torch::manual_seed(6);
  fm::CheckpointReader r(d / "c.pt", torch::kCPU);
  r.restore_rng(torch::kCPU);
  EXPECT_TRUE(torch::equal(torch::randn({8}), next));
}

TEST(Checkpoint, AFlippedByteIsRefusedNamingTheFile) {
  TempDir d;
  write_small_checkpoint(d / "c.pt");
  const auto size = std::filesystem::file_size(d / "c.pt");
  for (size_t at : {size_t(40), size_t(size / 2), size_t(size - 40), size_t(size - 1)}) {
    write_small_checkpoint(d / "c.pt");
    flip_byte(d / "c.pt", at);
    try {
      fm::CheckpointReader r(d / "c.pt", torch::kCPU);
      ADD_FAILURE() << "a flipped byte at " << at << " of " << size << " loaded";
    } catch (const fm::CorruptCheckpoint& e) {
      EXPECT_NE(std::string(e.what()).find(d / "c.pt"), std::string::npos) << e.what();
    }
  }
}

TEST(Checkpoint, AnUnsealedArchiveIsRefusedAsOlder) {
  // What fm wrote before checksums: the bare LibTorch archive.
  TempDir d;
  write_small_checkpoint(d / "c.pt");
  auto b = read_bytes(d / "c.pt");
  write_bytes(d / "old.pt", b.substr(0, b.size() - fm::kSealSize));
  try {
    fm::CheckpointReader r(d / "old.pt", torch::kCPU);
    ADD_FAILURE() << "an unsealed archive loaded";
  } catch (const fm::CorruptCheckpoint& e) {
    EXPECT_NE(std::string(e.what()).find("older"), std::string::npos) << e.what();
  }
}

TEST(Checkpoint, TheSealedFileIsStillAnArchiveTorchOpens) {
  // The trailer sits after the zip's central directory, so Python's torch.jit.load reads the file as it is.
  TempDir d;
  write_small_checkpoint(d / "c.pt");
  auto r = run(fm::test::python() + " -c \"import torch; m = torch.jit.load('" + d / "c.pt" +
               "'); print(int(m.step))\"");
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("7"), std::string::npos) << r.output;
}

TEST(Checkpoint, SamplerStateOfOtherDataIsRefused) {
  fm::Dataset big, small;
  big.images = torch::zeros({10, 1, 2, 2}, torch::kUInt8);
  small.images = torch::zeros({4, 1, 2, 2}, torch::kUInt8);
  fm::BatchSampler a(big, false), b(small, false);
  a.next(3);
  torch::serialize::OutputArchive out;
  a.save(out);
  std::ostringstream bytes;
  out.save_to(bytes);
  torch::serialize::InputArchive in;
  std::istringstream is(bytes.str());
  in.load_from(is);
  EXPECT_THROW(b.load(in), fm::InputError);
}

TEST(AtomicFile, AFullDiskEndsWithTheCauseAndKeepsTheOldFile) {
  TempDir d;
  TinyTmpfs fs(d.str(), 64 * 1024);
  if (!fs.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << fs.error() << "); the suite runs as root";
  fm::write_file_atomic(d / "f.bin", std::string(16 * 1024, 'a'));
  try {
    fm::write_file_atomic(d / "f.bin", std::string(128 * 1024, 'b'));
    ADD_FAILURE() << "a write larger than the disk succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(d / "f.bin"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(std::strerror(ENOSPC)), std::string::npos) << e.what();
  }
  EXPECT_EQ(read_bytes(d / "f.bin"), std::string(16 * 1024, 'a'));
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(d.str())) files += e.is_regular_file();
  EXPECT_EQ(files, 1) << "the temporary file is left behind";
}

TEST(CheckpointDir, MovingAsideKeepsTheResumedBranchOnly) {
  TempDir d;
  for (int s : {10, 20, 30}) write_bytes(d / fm::checkpoint_name(s), "x");
  auto moved = fm::move_aside_after(d.str(), 10, d / fm::checkpoint_name(10));
  ASSERT_EQ(moved.size(), 2u);
  auto left = fm::list_checkpoints(d.str());
  ASSERT_EQ(left.size(), 1u);
  EXPECT_EQ(left[0].first, 10);
  for (const auto& p : moved) {
    EXPECT_TRUE(std::filesystem::exists(p)) << p;
    EXPECT_NE(p.find("/abandoned_"), std::string::npos) << p;
  }
  // A second branch goes into a directory of its own; nothing to move makes no directory.
  write_bytes(d / fm::checkpoint_name(20), "y");
  auto again = fm::move_aside_after(d.str(), 10, d / fm::checkpoint_name(10));
  ASSERT_EQ(again.size(), 1u);
  EXPECT_NE(std::filesystem::path(again[0]).parent_path(), std::filesystem::path(moved[0]).parent_path());
  EXPECT_TRUE(fm::move_aside_after(d.str(), 10, d / fm::checkpoint_name(10)).empty());
  // The resumed file itself stays even when another file holds the same step.
  EXPECT_TRUE(std::filesystem::exists(d / fm::checkpoint_name(10)));
}

TEST(Checkpoint, SampleAndEvalNllRefuseACorruptCheckpointWithExitTwo) {
  TempDir d;
  auto t = run(fm_cmd(tiny_train_args(d / "run") + " train.steps=10"));
  ASSERT_EQ(t.code, 0) << t.output;
  const std::string ck = d / "run/checkpoints/ckpt_000000010.pt";
  flip_byte(ck, std::filesystem::file_size(ck) / 2);
  auto s = run(fm_cmd("sample --checkpoint " + ck + " --num-samples 4 --device cpu --out " + d / "s"));
  EXPECT_EQ(s.code, 2) << s.output;
  EXPECT_NE(s.output.find(ck + ": checksum mismatch"), std::string::npos) << s.output;
  auto e = run(fm_cmd("eval-nll --checkpoint " + ck + " --data toy:checkerboard --limit 4 --device cpu"));
  EXPECT_EQ(e.code, 2) << e.output;
  EXPECT_NE(e.output.find(ck + ": checksum mismatch"), std::string::npos) << e.output;
}

TEST(Checkpoint, ResumeAutoFallsBackToTheNewestThatVerifies) {
  TempDir d;
  auto t = run(fm_cmd(tiny_train_args(d / "run") + " train.steps=40 --stop-after 30"));
  ASSERT_EQ(t.code, 0) << t.output;
  const std::string bad = d / "run/checkpoints/ckpt_000000030.pt";
  flip_byte(bad, std::filesystem::file_size(bad) / 3);
  auto r = run(fm_cmd(tiny_train_args(d / "run") + " train.steps=40 --resume auto"));
  ASSERT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("skipping " + bad + ": checksum mismatch"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("resumed from " + d / "run/checkpoints/ckpt_000000020.pt"), std::string::npos) << r.output;
  // The damaged file went aside with the abandoned branch; the run rewrote step 30 and finished.
  fm::CheckpointReader ok(d / "run/checkpoints/ckpt_000000030.pt", torch::kCPU);
  EXPECT_EQ(ok.step(), 30);
  EXPECT_NE(r.output.find("abandoned_"), std::string::npos) << r.output;
  // When nothing verifies, --resume auto refuses rather than start over beside them.
  for (const auto& [s, p] : fm::list_checkpoints(d / "run/checkpoints")) flip_byte(p, 100);
  auto none = run(fm_cmd(tiny_train_args(d / "run") + " train.steps=50 --resume auto"));
  EXPECT_EQ(none.code, 2) << none.output;
  EXPECT_NE(none.output.find("none of its 4 checkpoints verifies"), std::string::npos) << none.output;
}

TEST(Checkpoint, ATrainingRunThatFillsTheDiskStopsAndKeepsItsCheckpoints) {
  TempDir d;
  const std::string mnt = d / "disk";
  std::filesystem::create_directories(mnt);
  const std::string ref = d / "ref.pt";
  write_small_checkpoint(ref);
  const size_t ckpt_size = std::filesystem::file_size(ref);
  // Room for the config, the metrics and a handful of checkpoints, not for the forty the run would write.
  TinyTmpfs fs(mnt, 4096 * ((5 * ckpt_size + 16384) / 4096));
  if (!fs.mounted()) GTEST_SKIP() << "cannot mount a tmpfs here (" << fs.error() << "); the suite runs as root";
  auto r = run(fm_cmd(tiny_train_args(mnt + "/run") + " train.steps=400"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("write failed (" + std::string(std::strerror(ENOSPC)) + ")"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find(mnt + "/run/checkpoints/ckpt_"), std::string::npos) << r.output;
  auto kept = fm::list_checkpoints(mnt + "/run/checkpoints");
  ASSERT_GE(kept.size(), 2u);
  for (const auto& [s, p] : kept) {
    fm::CheckpointReader ck(p, torch::kCPU);
    EXPECT_EQ(ck.step(), s);
  }
  for (const auto& e : std::filesystem::directory_iterator(mnt + "/run/checkpoints"))
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
}

TEST(Checkpoint, AWriteOverTheFileSizeLimitStopsTheRun) {
  // The same failure without a mount: RLIMIT_FSIZE makes a large write fail with EFBIG (SIGXFSZ ignored).
  // 16 KiB: room for config.json, not for this run's checkpoints of about 35 KB.
  TempDir d;
  auto r = run("trap '' XFSZ; prlimit --fsize=16384 " +
               fm_cmd(tiny_train_args(d / "run") + " train.steps=20"));
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find(d / "run/checkpoints/ckpt_000000010.pt: write failed (" + std::string(std::strerror(EFBIG))),
            std::string::npos)
      << r.output;
  EXPECT_FALSE(std::filesystem::exists(d / "run/checkpoints/ckpt_000000010.pt"));
  for (const auto& e : std::filesystem::directory_iterator(d / "run/checkpoints"))
    ADD_FAILURE() << "left behind: " << e.path();
}
