#pragma once
// `fm reflow`: the (noise, sample) pairs of a checkpoint's flow, for training its rectified flow (Liu et al. 2022,
// "Flow Straight and Fast"; Lee et al. 2024, "Improving the Training of Rectified Flows"). Pair i is the noise x0 of
// item i (the noise fm sample gives it for the seed) and the sample x1 the solver carries it to, with its label when the
// model is class-conditional. The pairs go to OUT/pairs.npz (x0, x1 float32 [N, ...]; labels int64 [N]) with
// OUT/pairs.json, which records how they were made; `data.path: "pairs:OUT"` trains on them (data/pairs.h) with
// path.coupling = pairs. Built on fm sample's runner: over ranks, with shards kept as batches finish, resumable with
// --resume, the same bytes whatever the number of ranks or the batch size.
#include <string>

#include <nlohmann/json.hpp>

#include "dist/world.h"
#include "sample/generation.h"

namespace fm {

using ReflowOptions = GenerationOptions;  // n: the number of pairs; out_dir: the pairs' directory

using ReflowSummary = GenerationSummary;  // npz: OUT/pairs.npz, json: OUT/pairs.json

// Over the ranks of `world` (nullptr: this process alone); rank 0 writes the files. With o.resume, a finished run of
// the same settings is kept and its summary read back.
ReflowSummary run_reflow(const ReflowOptions& o, dist::World* world = nullptr);

// The checks of o.out_dir made before any work: the pairs or shards of an earlier run are continued only with
// o.resume and replaced only with o.overwrite; InputError otherwise.
void check_reflow_out(const ReflowOptions& o);

}  // namespace fm
