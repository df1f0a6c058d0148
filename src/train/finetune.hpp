#pragma once
// Transfer (DESIGN.md "Transfer", docs/FINETUNE.md): a pre-trained GPPF network learns new tasks.
//  1. Probe (RUN_DIR/probe/): the pre-trained backbone (legos, stem, shortcuts, BN affine parameters)
//     is loaded and frozen; each new task's routers start at zero logits and learn with soft routing
//     over all legos of their layer (so every logit gets a gradient), together with the task's new
//     head, for finetune.probe_steps steps at the constant rate finetune.probe_lr.
//  2. Each task keeps the top-k legos of its learned logits; its routers stay frozen from here on.
//  3. Fine-tune (RUN_DIR, like `gppf train`): `steps` steps of the config's optimizer and schedule
//     over the task's path and head (finetune.freeze_backbone: the head only).
// From scratch: the same network from random initialisation, routing learned as in `gppf train`, for
// probe_steps + steps steps, so both see the same number of batches of the new tasks.
#include <functional>
#include <string>
#include <vector>

#include "src/train/config.hpp"
#include "src/train/trainer.hpp"

namespace gppf::train {

struct FinetuneOptions {
  std::string checkpoint;  // the pre-trained checkpoint file
  std::string run_dir;
  bool from_scratch = false;
  // "auto": continue an interrupted run in run_dir: a probe that reached its last step is not run
  // again, an unfinished phase resumes from its newest checkpoint (TrainOptions::resume), bitwise as
  // if it had not stopped. "": start both phases from step 0.
  std::string resume;
  // Both phases in this process alone even under MPI (TrainOptions::single_process; tests' references).
  bool single_process = false;
  // Start over in a run directory that holds a previous run (TrainOptions::force, both phases).
  bool force = false;
  std::string command_line = "";  // for each phase's run.json (TrainOptions::command_line)
  // Called with "probe", "finetune" or "scratch" on each phase's network once it is prepared (weights
  // loaded, parameters frozen), right before its optimizer is created: tests look at it there.
  std::function<void(const std::string& phase, Network& net)> on_prepared;
};

struct FinetuneResult {
  TrainSummary probe;    // the probe phase (steps 0 with from_scratch)
  TrainSummary summary;  // the fine-tune (or from-scratch) phase: RUN_DIR/summary.json
  // Per task (config order), per lego layer: the routed legos the probe chose (router indices).
  std::vector<std::vector<std::vector<int>>> legos;
  bool interrupted() const { return probe.interrupted || summary.interrupted; }
};

FinetuneResult run_finetune(const TrainConfig& config, const FinetuneOptions& options);

// Loads the pre-trained backbone of `checkpoint` into `net`: every backbone parameter except the
// routers, by name. `net`'s tasks are new, so each of their BN running statistics starts as the mean
// over the pre-training tasks' ones (the trainer re-calibrates them before every evaluation anyway).
void load_pretrained_backbone(Network& net, const std::string& checkpoint);

// True for a router's logits ("<layer>.router.task<i>").
bool is_router(const std::string& parameter_name);

}  // namespace gppf::train
