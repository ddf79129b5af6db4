#include <algorithm>
#include <fstream>

#include <gtest/gtest.h>

#include "config/config.h"
#include "test_util.h"
#include "util/error.h"
#include "util/suggest.h"

using fm::Config;
using fm::InputError;
using fm::test::TempDir;

namespace {

std::string write(const TempDir& d, const std::string& text) {
  std::string p = d / "c.json";
  std::ofstream(p) << text;
  return p;
}

// The message of the InputError that `f` throws ("" when it throws none).
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Config, DefaultsRoundTripThroughJson) {
  Config c;
  c.train.lr = 3e-4;
  c.model.unet.channel_mult = {1, 2};
  auto j = fm::to_json(c);
  Config back = fm::config_from_json(j, "x");
  EXPECT_EQ(fm::to_json(back), j);
  EXPECT_DOUBLE_EQ(back.train.lr, 3e-4);
}

TEST(Config, UnknownKeyNamesPathAndClosestKey) {
  TempDir d;
  auto p = write(d, R"({"train": {"warmup_step": 1000}})");
  auto msg = error_of([&] { fm::load_config(p, {}); });
  EXPECT_NE(msg.find(p), std::string::npos) << msg;
  EXPECT_NE(msg.find("unknown key 'train.warmup_step' (did you mean 'train.warmup_steps'?)"), std::string::npos) << msg;
  msg = error_of([&] { fm::load_config(write(d, R"({"trian": {}})"), {}); });
  EXPECT_NE(msg.find("'trian'"), std::string::npos) << msg;
}

// train.earlier_steps is a record fm train writes, not a setting: a typo is never pointed to it and --set refuses it,
// but a run's own config.json, which holds it, reads back.
TEST(Config, RecordsAreNeitherSuggestedNorSettable) {
  TempDir d;
  auto msg = error_of([&] { fm::load_config(write(d, R"({"train": {"learning_rate": 1e-3}})"), {}); });
  EXPECT_NE(msg.find("unknown key 'train.learning_rate'"), std::string::npos) << msg;
  EXPECT_EQ(msg.find("earlier_steps"), std::string::npos) << msg;
  msg = error_of([&] { fm::load_config(write(d, "{}"), {"train.earlier_steps=100"}); });
  EXPECT_NE(msg.find("unknown key 'train.earlier_steps'"), std::string::npos) << msg;
  const auto keys = fm::config_keys();
  EXPECT_EQ(std::count(keys.begin(), keys.end(), "train.earlier_steps"), 0);
  EXPECT_EQ(std::count(keys.begin(), keys.end(), "train.steps"), 1);
  auto c = fm::load_config(write(d, R"({"train": {"earlier_steps": [100, 200]}})"), {});
  EXPECT_EQ(c.train.earlier_steps, (std::vector<int64_t>{100, 200}));
  EXPECT_EQ(fm::to_json(c)["train"]["earlier_steps"], nlohmann::json({100, 200}));
}

TEST(Config, SuggestionsCountASwapOfNeighboursAsOneEdit) {
  EXPECT_EQ(fm::edit_distance("trian", "train"), 1u);
  EXPECT_EQ(fm::edit_distance("ca", "abc"), 3u);  // optimal string alignment: no edits inside a swapped pair
  EXPECT_EQ(fm::edit_distance("", "abc"), 3u);
  EXPECT_EQ(fm::edit_distance("kitten", "sitting"), 3u);
  EXPECT_EQ(fm::typo_of("trian", {"train", "profile"}), std::optional<std::string>("train"));
  EXPECT_EQ(fm::typo_of("banana", {"ot", "sb"}), std::nullopt);
}

// A named choice is refused with the list, and a near miss names what it resembles; the device is checked here, by
// every command that reads a config, not only when a run starts.
TEST(Config, ChoicesAndDeviceAreCheckedWhenRead) {
  TempDir d;
  auto msg = error_of([&] { fm::load_config(write(d, R"({"path": {"coupling": "sinkhorm"}})"), {}); });
  EXPECT_NE(msg.find("path.coupling: must be one of independent, ot, sinkhorn, sb, pairs (got \"sinkhorm\"; did you mean "
                     "\"sinkhorn\"?)"),
            std::string::npos)
      << msg;
  msg = error_of([&] { fm::load_config(write(d, R"({"path": {"coupling": "banana"}})"), {}); });
  EXPECT_EQ(msg.find("did you mean"), std::string::npos) << msg;
  msg = error_of([&] { fm::load_config(write(d, R"({"model": {"type": 3}})"), {}); });
  EXPECT_NE(msg.find("model.type: expected a string, got 3"), std::string::npos) << msg;
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda0", "CPU"}) {
    msg = error_of([&] { fm::load_config(write(d, "{}"), {std::string("device=") + bad}); });
    EXPECT_NE(msg.find("device: must be auto, cpu, cuda or cuda:N"), std::string::npos) << bad << ": " << msg;
  }
  for (const char* good : {"auto", "cpu", "cuda", "cuda:0", "cuda:12"})
    EXPECT_EQ(fm::load_config(write(d, "{}"), {std::string("device=") + good}).device, good);
}

TEST(Config, WrongTypeNamesPathAndExpectedType) {
  TempDir d;
  auto msg = error_of([&] { fm::load_config(write(d, R"({"train": {"steps": "many"}})"), {}); });
  EXPECT_NE(msg.find("train.steps: expected an integer"), std::string::npos) << msg;
  msg = error_of([&] { fm::load_config(write(d, R"({"model": {"unet": {"channel_mult": [1, "2"]}}})"), {}); });
  EXPECT_NE(msg.find("model.unet.channel_mult: expected a list of integers"), std::string::npos) << msg;
  msg = error_of([&] { fm::load_config(write(d, R"({"train": 3})"), {}); });
  EXPECT_NE(msg.find("train: expected an object"), std::string::npos) << msg;
}

TEST(Config, OutOfRangeNamesPathAndRange) {
  TempDir d;
  auto msg = error_of([&] { fm::load_config(write(d, R"({"train": {"lr": -1}})"), {}); });
  EXPECT_NE(msg.find("train.lr: must be > 0"), std::string::npos) << msg;
  msg = error_of([&] { fm::load_config(write(d, R"({"train": {"ema_decay": 1.5}})"), {}); });
  EXPECT_NE(msg.find("train.ema_decay: must be in [0, 1]"), std::string::npos) << msg;
  msg = error_of([&] { fm::load_config(write(d, R"({"sample": {"solver": "rk45"}})"), {}); });
  EXPECT_NE(msg.find("sample.solver: must be one of euler, midpoint, heun, rk4, dopri5"), std::string::npos) << msg;
  msg = error_of([&] { fm::load_config(write(d, R"({"train": {"betas": [0.9]}})"), {}); });
  EXPECT_NE(msg.find("train.betas: must have 2 elements"), std::string::npos) << msg;
}

TEST(Config, OverridesParseWithTheKeysOwnType) {
  TempDir d;
  auto p = write(d, R"({"train": {"steps": 10}})");
  Config c = fm::load_config(p, {"train.lr=2e-4", "train.steps=1e3", "train.bf16=false",
                                 "model.unet.channel_mult=1,2,4", "data.path=cifar10:/tmp/x", "path.type=vp"});
  EXPECT_DOUBLE_EQ(c.train.lr, 2e-4);
  EXPECT_EQ(c.train.steps, 1000);
  EXPECT_FALSE(c.train.bf16);
  EXPECT_EQ(c.model.unet.channel_mult, (std::vector<int64_t>{1, 2, 4}));
  EXPECT_EQ(c.data.format, fm::DataFormat::cifar10);  // a "format:path" spec sets both
  EXPECT_EQ(c.data.path, "/tmp/x");
  EXPECT_EQ(c.path.type, fm::PathType::vp);

  EXPECT_NE(error_of([&] { fm::load_config(p, {"train.steps=1.5"}); }).find("--set train.steps: expected an integer"),
            std::string::npos);
  EXPECT_NE(error_of([&] { fm::load_config(p, {"train.lr=fast"}); }).find("--set train.lr: expected a number"),
            std::string::npos);
  EXPECT_NE(error_of([&] { fm::load_config(p, {"train.bf16=maybe"}); }).find("true or false"), std::string::npos);
  auto msg = error_of([&] { fm::load_config(p, {"train.stpes=3"}); });
  EXPECT_NE(msg.find("unknown key 'train.stpes' (did you mean 'train.steps'?)"), std::string::npos) << msg;
  EXPECT_NE(error_of([&] { fm::load_config(p, {"train.lr=0"}); }).find("train.lr: must be > 0"), std::string::npos);
  EXPECT_NE(error_of([&] { fm::load_config(p, {"noequals"}); }).find("expected KEY=VALUE"), std::string::npos);
}

// "folders:DIR" is a mistyped format, not a path of the config's own format that then fails with that format's error.
TEST(Config, MistypedFormatInDataPathIsNamed) {
  TempDir d;
  auto p = write(d, R"({"data": {"format": "cifar10"}})");
  auto msg = error_of([&] { fm::load_config(p, {"data.path=folders:/tmp/x"}); });
  EXPECT_NE(msg.find("data.path: unknown format 'folders'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("folder, npz"), std::string::npos) << msg;
  // A path that merely holds a colon stays a path.
  EXPECT_EQ(fm::load_config(p, {"data.path=/data/run:1/cifar"}).data.path, "/data/run:1/cifar");
}

TEST(Config, HostileValuesAndOverridesGiveOneLineErrors) {
  TempDir d;
  // Deep nesting: the message names the key without printing (recursively) what it holds.
  std::string deep = std::string(50000, '[') + std::string(50000, ']');
  auto msg = error_of([&] { fm::load_config(write(d, R"({"train": {"lr": 1e500}})"), {}); });
  EXPECT_NE(msg.find("invalid JSON"), std::string::npos) << msg;  // nlohmann's out_of_range, not a parse_error
  msg = error_of([&] { fm::load_config(write(d, R"({"seed": )" + deep + "}"), {}); });
  EXPECT_NE(msg.find("seed: expected an integer, got a nested list"), std::string::npos) << msg;
  msg = error_of([&] { fm::load_config(write(d, R"({"seed": 18446744073709551615})"), {}); });
  EXPECT_NE(msg.find("seed: expected an integer"), std::string::npos) << msg;
  // Overrides that are JSON-pointer syntax rather than keys, and list items too large for an integer.
  auto p = write(d, "{}");
  for (const char* bad : {"train.~2=1", "train/lr=1", "train.betas.0=0.5"}) {
    msg = error_of([&] { fm::load_config(p, {bad}); });
    EXPECT_NE(msg.find("unknown key"), std::string::npos) << bad << " -> " << msg;
  }
  msg = error_of([&] { fm::load_config(p, {"model.unet.channel_mult=1,1e300"}); });
  EXPECT_NE(msg.find("--set model.unet.channel_mult: expected a list of integers"), std::string::npos) << msg;
  // Sizes that allocate have an upper bound too, checked before anything is built.
  msg = error_of([&] { fm::load_config(p, {"train.batch_size=1e12"}); });
  EXPECT_NE(msg.find("train.batch_size: must be in [1, 16777216] (got 1000000000000)"), std::string::npos) << msg;
  msg = error_of([&] { fm::load_config(p, {"model.unet.channel_mult=1,2,1000"}); });
  EXPECT_NE(msg.find("model.unet.channel_mult: element 2 must be in [1, 64]"), std::string::npos) << msg;
}

TEST(Config, FileErrorsNameTheFile) {
  TempDir d;
  auto msg = error_of([&] { fm::load_config(d / "missing.json", {}); });
  EXPECT_NE(msg.find("missing.json: cannot open"), std::string::npos) << msg;
  auto p = write(d, "{ not json");
  msg = error_of([&] { fm::load_config(p, {}); });
  EXPECT_NE(msg.find(p + ": invalid JSON"), std::string::npos) << msg;
}

TEST(Config, ShippedConfigsLoad) {
  for (const auto& e : std::filesystem::directory_iterator(fm::test::source_dir() + "/configs")) {
    if (e.path().extension() != ".json") continue;
    SCOPED_TRACE(e.path().string());
    Config c = fm::load_config(e.path().string(), {});
    EXPECT_FALSE(c.comment.empty()) << "every recipe says where its numbers come from";
  }
}

TEST(Config, ThePapersTable1RecipesDifferOnlyInTargetAndPath) {
  // Table 1 (CIFAR-10) compares objectives on one network and schedule: each recipe is cifar10.json with its row's
  // model.target and path, and cites the paper.
  const std::string dir = std::string(FM_SOURCE_DIR) + "/configs/";
  auto ot = fm::to_json(fm::load_config(dir + "cifar10.json", {}));
  for (auto [file, target] : std::vector<std::pair<std::string, fm::Target>>{{"cifar10_ddpm.json", fm::Target::noise},
                                                                             {"cifar10_score_matching.json", fm::Target::score},
                                                                             {"cifar10_fm_diffusion.json", fm::Target::velocity}}) {
    auto c = fm::load_config(dir + file, {});
    EXPECT_EQ(c.model.target, target) << file;
    EXPECT_EQ(c.path.type, fm::PathType::vp) << file;
    EXPECT_NE(c.comment.find("Table 1"), std::string::npos) << file;
    auto j = fm::to_json(c);
    for (const char* same : {"data", "train", "sample", "time", "seed"}) EXPECT_EQ(j[same], ot[same]) << file << " " << same;
    j["model"]["target"] = "velocity";
    EXPECT_EQ(j["model"], ot["model"]) << file;
  }
  EXPECT_EQ(fm::load_config(dir + "cifar10.json", {}).path.type, fm::PathType::cond_ot);
}
