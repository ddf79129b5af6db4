#pragma once
// Post-hoc EMA reconstruction (Karras et al. 2024, EDM2, section 3.2 and appendix C.3): the EMA of any length
// sigma_rel at a step T, as the combination sum_i x_i theta_i of the profiles theta_i a run snapshotted at steps <= T
// (RUN/phema, checkpoint/phema_snapshot.h) whose weights x_i make the combined profile the least-squares fit of a
// power-function profile of that length (checkpoint/phema_math.h). Each result is an ordinary fm checkpoint, the
// run's checkpoint of step T with its EMA weights replaced, which fm sample, eval-nll, evaluate and export take.
#include <cstdint>
#include <string>
#include <vector>

namespace fm {

struct PhemaReconstruction {
  std::string checkpoint;    // the run's checkpoint whose EMA is replaced; the reconstruction is at its step
  std::string snapshot_dir;  // the run's snapshots (RUN/phema); there must be one at the checkpoint's step
  std::vector<double> sigma_rels;        // the lengths to reconstruct, each in (0, sqrt(1/12)]
  std::vector<double> input_sigma_rels;  // only the snapshotted profiles of these lengths (empty: every profile)
  std::string out_dir;
  std::string out_option = "--out";  // what messages about out_dir call it
  bool overwrite = false;  // replace reconstructions already in out_dir (without it they are refused before any work)
};

struct ReconstructedEma {
  double sigma_rel = 0.0;
  double gamma = 0.0;
  int64_t step = 0;
  std::string checkpoint;  // out_dir/ema_<sigma_rel>_<step>.pt
  std::string record;      // the same with .json: the snapshots used, their coefficients, the template's fingerprint
  int64_t inputs = 0;      // the snapshotted profiles combined
};

// The checkpoint file name of a reconstruction: ema_<sigma_rel (%g)>_<step, 9 digits>.pt.
std::string reconstruction_name(double sigma_rel, int64_t step);

// `fm ema --run-dir`: the checkpoint of RUN/checkpoints at `step`, or (step < 0) at the newest step that has both a
// checkpoint and a snapshot in RUN/phema. InputError naming what the run holds when there is none.
std::string phema_checkpoint_of_run(const std::string& run_dir, int64_t step);

// Reads the snapshots twice (the coefficients need every profile's time first, then the weights are summed in float64
// one snapshot at a time) and writes one checkpoint and record per length, atomically. The output bytes depend only on
// the inputs. InputError for bad lengths, a missing snapshot at the checkpoint's step, snapshots that do not fit the
// checkpoint's network, or outputs that exist without `overwrite`.
std::vector<ReconstructedEma> reconstruct_phema(const PhemaReconstruction& r);

}  // namespace fm
