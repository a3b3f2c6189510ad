"""One run of the main job: data → model → baseline → pruning rounds → fine-tune → export → report.

Every phase ends with a checkpoint (``checkpoint.RunStore``); re-running on the same workdir
resumes at the phase (and epoch or round) where the last run stopped. A run its round budget
stopped goes back to pruning when the resuming config allows more rounds (``extends_pruning``).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from absl import logging

from afp_tf import export, io_utils, stats
from afp_tf.export import latency, latency_model
from afp_tf.method import prc
from afp_tf.method.pruner import Pruner, PruneState, filters_per_group
from afp_tf.run import checkpoint, config_lib, report, tracking
from afp_tf.run.task_builders import load_task
from afp_tf.train import precision, training
from afp_tf.train.epochs import run_epochs
from afp_tf.train.task import TaskData

PHASES = ("baseline", "pruning", "finetune", "export", "done")


class RunError(RuntimeError):
    """A run cannot go on; the message says why and what to do."""


def run(cfg, workdir: str | os.PathLike) -> dict[str, Any]:
    """Runs (or resumes) the experiment ``cfg`` in ``workdir``; returns the report summary."""
    return Run(cfg, workdir).execute()


def extends_pruning(cfg, state: dict[str, Any] | None) -> bool:
    """Whether resuming ``state`` under ``cfg`` reopens pruning: its rounds were stopped by the
    round budget and ``cfg.prune.max_rounds`` now allows more attempts."""
    if not state or not cfg.prune.enabled or state.get("phase") in ("baseline", "pruning"):
        return False
    prune = state.get("prune") or {}
    attempts = prune.get("controller", {}).get("attempts", 0)
    return prune.get("stop_reason") == "round budget" and cfg.prune.max_rounds > attempts


def finished(cfg, workdir: str | os.PathLike) -> bool:
    """Whether running ``cfg`` on ``workdir`` has nothing left to do."""
    state = checkpoint.RunStore(Path(workdir).expanduser().resolve()).load()
    return bool(state) and state["phase"] == "done" and not extends_pruning(cfg, state)


def make_optimizer(
    cfg, learning_rate: float | None = None, *, cosine_steps: int = 0, warmup_steps: int = 0
) -> keras.optimizers.Optimizer:
    """``cfg.train``'s optimizer, at the pruning learning rate unless ``learning_rate`` is given.

    With ``cosine_steps``, the rate decays to 0 (cosine) over that many steps, the first
    ``warmup_steps`` of them rising linearly from 0.
    """
    t = cfg.train
    lr = learning_rate or cfg.prune.learning_rate or t.learning_rate
    schedule = (
        {"schedule": "cosine", "decay_steps": cosine_steps, "warmup_steps": warmup_steps}
        if cosine_steps
        else {}
    )
    return training.make_optimizer(
        t.optimizer, lr, momentum=t.momentum, weight_decay=t.weight_decay, **schedule
    )


def baseline_optimizer_factory(cfg, steps: int):
    """The baseline's optimizer factory: ``train.lr_schedule`` over ``steps`` per epoch.

    ``"cosine"`` decays the rate to 0 over ``train.baseline_epochs`` after
    ``train.warmup_epochs`` of linear warmup; it needs a known epoch length (``steps`` > 0).
    """
    t = cfg.train
    if t.lr_schedule == "constant" or not t.baseline_epochs or t.baseline_model:
        return lambda: make_optimizer(cfg, t.learning_rate)
    if steps <= 0:
        raise RunError(
            "train.lr_schedule='cosine' needs a known epoch length; set train.steps_per_epoch."
        )
    total, warmup = steps * t.baseline_epochs, steps * t.warmup_epochs
    return lambda: make_optimizer(cfg, t.learning_rate, cosine_steps=total, warmup_steps=warmup)


def epoch_steps(cfg, dataset) -> int:
    """Steps in one training epoch over ``dataset`` (0 when its length is unknown)."""
    return max(cfg.train.steps_per_epoch or int(dataset.cardinality()), 0)


class Run:
    """The state and phases of one run."""

    def __init__(self, cfg, workdir: str | os.PathLike):
        self.cfg = cfg
        self.workdir = _prepare_workdir(workdir)
        self.strategy = training.make_strategy(cfg.train.strategy)
        self.workdir = _worker_dir(self.workdir, self.strategy)
        self.store = checkpoint.RunStore(self.workdir)
        self.log = tracking.RunLog(self.workdir)
        self.state: dict[str, Any] = {}
        self.data: TaskData | None = None

    # ------------------------------------------------------------------ driver
    def execute(self) -> dict[str, Any]:
        """Runs the phases left, building models under ``train.mixed_precision``."""
        with precision.policy(self.cfg.train.mixed_precision):
            return self._execute()

    def _execute(self) -> dict[str, Any]:
        keras.utils.set_random_seed(self.cfg.seed)
        self.state = self.store.load() or {"phase": "baseline", "epoch": 0}
        self._check_same_config()
        logging.info("Run %s in %s, phase %s.", self.cfg.name, self.workdir, self.state["phase"])
        self.data = load_task(self.cfg)
        self.pruner = self._make_pruner()
        if extends_pruning(self.cfg, self.state):
            self._reopen_pruning()
        if self.pruner.options.distill and self.state["phase"] in ("pruning", "finetune"):
            # A resumed run distils from the baseline it saved (a fresh one: Pruner.start).
            with self.strategy.scope():
                self.pruner.teacher = keras.saving.load_model(
                    self.workdir / "baseline.keras", compile=False
                )
        phases = {
            "baseline": self._baseline,
            "pruning": self._prune,
            "finetune": self._finetune,
            "export": self._export,
        }
        while self.state["phase"] != "done":
            started = time.time()
            phase = self.state["phase"]
            phases[phase]()
            logging.info("Phase %s done in %.0f s.", phase, time.time() - started)
        summary = report.write(self.workdir, self.state, self.log.read())
        self.log.close()
        return summary

    def _make_pruner(self) -> Pruner:
        cfg, data = self.cfg, self.data
        return Pruner(
            options=config_lib.prune_options(cfg),
            task=data.task,
            train_data=data.train_for_epoch or data.train,
            val_data=data.val,
            accept_data=data.accept,
            accept_size=data.accept_size,
            seed=cfg.seed,
            strategy=self.strategy,
            optimizer_factory=lambda: make_optimizer(cfg),
            global_batch_size=cfg.data.batch_size,
            orth_beta=cfg.orth.beta,
            steps_per_epoch=cfg.train.steps_per_epoch or None,
            record=self.log.record,
            progress=cfg.train.progress,
            step_options=training.StepOptions(
                jit_compile=cfg.train.jit_compile,
                steps_per_execution=cfg.train.steps_per_execution,
            ),
        )

    def _finetune_optimizer_factory(self):
        """The pruning optimizer with its learning rate decayed to 0 (cosine) over fine-tuning."""
        cfg = self.cfg
        steps = epoch_steps(cfg, self.data.train)
        if not steps:  # unknown length: keep the rate constant
            return None
        return lambda: make_optimizer(cfg, cosine_steps=steps * cfg.prune.finetune_epochs)

    def _evaluate(self, model: keras.Model) -> dict[str, Any]:
        """Validation and test metric of ``model`` (test is reported, never used to decide);
        with the task's report evaluator, also all it measured per split (``evaluation``)."""
        trainer = self.pruner.make_trainer(model)
        task, data = self.data.task, self.data
        splits = {"val": data.val, "test": data.test}
        if data.accept is not None:  # the decision metric
            splits["accept"] = data.accept
        if task.report_evaluator is None:
            return {split: task.score(trainer, ds) for split, ds in splits.items()}
        evaluation = {split: task.report_evaluator(trainer, ds) for split, ds in splits.items()}
        scores = {split: float(m[task.metric_name]) for split, m in evaluation.items()}
        return {**scores, "evaluation": evaluation}

    def _save(self, phase: str, model: keras.Model, optimizer=None, tag: str = "latest") -> None:
        self.state["phase"] = phase
        self.store.save(self.state, model=model, optimizer=optimizer, tag=tag)

    # ------------------------------------------------------------------ phases
    def _baseline(self) -> None:
        cfg, state = self.cfg, self.state
        with self.strategy.scope():
            if state.get("model_file"):
                model = self.store.load_model(state)
            elif cfg.train.baseline_model:
                model = _load_baseline(cfg.train.baseline_model)
            else:
                model = self.data.build_model()
        beta = cfg.orth.beta if cfg.orth.during_baseline else 0.0
        trainer = self.pruner.make_trainer(
            model,
            orth_beta=beta,
            optimizer_factory=baseline_optimizer_factory(cfg, epoch_steps(cfg, self.data.train)),
        )
        if self.store.restore_optimizer(state, trainer.optimizer, model):
            logging.info("Resumed baseline training after epoch %d.", state["epoch"])
        epochs = 0 if cfg.train.baseline_model else cfg.train.baseline_epochs

        def end_of_epoch(epoch: int, logs: dict) -> None:
            self.log.record("baseline", epoch, logs)
            logging.info("baseline epoch %d/%d: %s", epoch, epochs, _fmt_logs(logs))
            state["epoch"] = epoch
            self._save("baseline", model, trainer.optimizer, tag="baseline_training")

        try:
            run_epochs(
                trainer,
                self.data.train,
                max(epochs - state["epoch"], 0),
                steps=cfg.train.steps_per_epoch or None,
                first_epoch=state["epoch"],
                progress=cfg.train.progress,
                evaluate=self.pruner.evaluate,
                on_epoch_end=end_of_epoch,
            )
        except training.NonFiniteLossError as e:
            raise RunError(
                f"Baseline training diverged ({e}); lower --config.train.learning_rate "
                f"(now {cfg.train.learning_rate}) and run the same command again."
            ) from e
        metrics = self._evaluate(model)
        io_utils.save_model(model, self.workdir / "baseline.keras")
        state["baseline"] = _describe(model, metrics)
        pstate = self.pruner.start(model, state["baseline"]["macs"], epoch=state["epoch"])
        state["prune"] = pstate.to_dict()
        logging.info(
            "Baseline: val %.4f, test %.4f, %s params, %s MACs; floor %.4f.",
            metrics["val"],
            metrics["test"],
            f"{state['baseline']['params']:,}",
            f"{state['baseline']['macs']:,}",
            prc.PruningRateController.from_dict(pstate.controller).floor,
        )
        self._save("pruning", model, tag="baseline")

    def _reopen_pruning(self) -> None:
        """Back to pruning from the current (fine-tuned) model, its metrics measured again."""
        with self.strategy.scope():
            model = self.store.load_model(self.state)
        pstate = PruneState.from_dict(self.state["prune"])
        trainer, name = self.pruner.make_trainer(model, orth_beta=0.0), self.data.task.metric_name
        pstate.val_metric = float(self.pruner.evaluate(trainer, "val")[name])
        pstate.metric = float(self.pruner.evaluate(trainer, "accept")[name])
        pstate.stop_reason = None
        pstate.controller = {**pstate.controller, "stop_reason": None}
        logging.warning(
            "Pruning stopped by its round budget after %d attempts; prune.max_rounds=%d reopens "
            "it from the current pruned model (decision metric %.4f).",
            pstate.controller["attempts"],
            self.cfg.prune.max_rounds,
            pstate.metric,
        )
        self.state["prune"] = pstate.to_dict()
        for key in ("pruned", "export"):
            self.state.pop(key, None)
        self._save("pruning", None)

    def _prune(self) -> None:
        with self.strategy.scope():
            model = self.store.load_model(self.state)
        pstate = PruneState.from_dict(self.state["prune"])
        pstate.baseline_macs = pstate.baseline_macs or self.state["baseline"]["macs"]
        if pstate.round:
            logging.info("Resuming pruning after round %d.", pstate.round)
        self.pruner.latency = self._latency_table(model)

        def on_round_end(ps: PruneState, m: keras.Model, changed: bool) -> None:
            self.state["prune"] = ps.to_dict()
            self._save("pruning", m if changed else None, tag=f"round_{ps.round:03d}")

        model, pstate = self.pruner.run(model, pstate, on_round_end=on_round_end)
        self.state["prune"] = pstate.to_dict()
        self._save("finetune", model, tag="pruned_unfinetuned")

    def _finetune(self) -> None:
        cfg, state = self.cfg, self.state
        with self.strategy.scope():
            model = self.store.load_model(state)
        pstate = PruneState.from_dict(state["prune"])
        controller = prc.PruningRateController.from_dict(pstate.controller)
        before = pstate.val_metric if math.isfinite(pstate.val_metric) else pstate.metric
        if cfg.prune.finetune_epochs and pstate.round:
            with self.strategy.scope():
                tuned = keras.models.clone_model(model)
                tuned.set_weights(model.get_weights())
            trainer = self.pruner.make_trainer(
                tuned, optimizer_factory=self._finetune_optimizer_factory()
            )
            best = self.pruner.train_epochs(
                trainer,
                pstate,
                cfg.prune.finetune_epochs,
                "finetune",
                keep_best=True,
                start_metric=before,
                stop_on_nonfinite=True,
            )
            state["prune"]["epoch"] = pstate.epoch  # a reopened pruning goes on after it
            decision = self.pruner.evaluate(self.pruner.make_trainer(tuned), "accept")
            if best > before and controller.meets_floor(decision[self.data.task.metric_name]):
                model = tuned
                logging.info("Fine-tuning: validation %.4f -> %.4f.", before, best)
            else:
                logging.info("Fine-tuning did not improve %.4f; kept the model before it.", before)
        metrics = self._evaluate(model)
        io_utils.save_model(model, self.workdir / "pruned.keras")
        decision = metrics.get("accept", metrics["val"])
        split = "acceptance (held out of all training and early stopping)"
        state["pruned"] = {
            **_describe(model, metrics),
            "floor": controller.floor,
            "margin": controller.margin,
            "accept_floor": controller.accept_floor,
            "meets_floor": bool(controller.meets_floor(decision)),
            "guarantee": controller.guarantee(decision, split if "accept" in metrics else "val"),
        }
        table = self._latency_table(model)
        if table is not None:
            baseline = keras.saving.load_model(self.workdir / "baseline.keras", compile=False)
            state["pruned"]["latency"] = {
                "format": table.format,
                "threads": table.threads,
                "target_ms": cfg.prune.latency_target_ms or None,
                "predicted_ms": table.predict(model),
                "measured_ms": None,  # after export
                "baseline_predicted_ms": table.predict(baseline),
                "baseline_measured_ms": None,
                "stopped_by": pstate.stop_reason,
            }
        self._save("export" if cfg.export.enabled else "done", model, tag="pruned")

    def _export(self) -> None:
        cfg = self.cfg
        rep_x, _ = self.data.sample("train", cfg.export.samples)
        val_x, val_y = self.data.sample("val", cfg.export.samples)
        results = {}
        for name in ("baseline", "pruned"):
            model = keras.saving.load_model(self.workdir / f"{name}.keras", compile=False)
            results[name] = self.data.task.export(
                model,
                self.workdir / "export" / name,
                formats=export.parse_formats(cfg.export.formats),
                representative=rep_x,
                val_x=val_x,
                val_y=val_y,
                tolerances=export.parse_tolerances(cfg.export.tolerances),
            )
        self.state["export"] = {
            "reports": results,
            "latency": latency.latency_table(
                self.workdir / "export" / "baseline",
                self.workdir / "export" / "pruned",
                macs_baseline=self.state["baseline"]["macs"],
                macs_pruned=self.state["pruned"]["macs"],
                runs=cfg.export.latency_runs,
            ),
        }
        budget = self.state["pruned"].get("latency")
        if budget:
            self._measure_budget(budget)
        self._save("done", None)

    def _measure_budget(self, budget: dict) -> None:
        """Times the baseline and pruned artifact of the format latency was predicted in, as
        exported, in one process (so that the measured speed-up holds on a drifting CPU)."""
        name = export.FORMATS[budget["format"]].filename
        paths = [self.workdir / "export" / model / name for model in ("baseline", "pruned")]
        if not all(path.is_file() for path in paths):
            return
        base, pruned = latency_model.time_together(
            paths,
            self.workdir / "export" / "latency_timing",
            threads=budget["threads"],
            runs=self.cfg.export.latency_runs,
        )
        budget["baseline_measured_ms"] = base["median_ms"]
        budget["measured_ms"] = pruned["median_ms"]
        budget["predicted_speedup"] = budget["baseline_predicted_ms"] / budget["predicted_ms"]
        budget["measured_speedup"] = base["median_ms"] / pruned["median_ms"]

    def _latency_table(self, model: keras.Model) -> latency_model.LatencyTable | None:
        """The latency table the pruning options need (None if none): ``prune.latency_table``,
        else measured once on this machine and cached in the workdir."""
        opts = self.pruner.options
        if not opts.needs_latency:
            return None
        return latency_model.load_or_measure(
            precision.as_float32(model),
            opts.latency_format,
            self.workdir,
            table=opts.latency_table,
            runs=self.cfg.export.latency_runs,
            deploy=self.data.task.deployed,
        )

    def _check_same_config(self) -> None:
        path = self.workdir / "config.json"
        current = self.cfg.to_dict()
        if path.exists() and self.state.get("phase", "baseline") != "baseline":
            saved = io_utils.read_json(path)
            changed = sorted(
                k for k in _flatten(current) if _flatten(saved).get(k) != _flatten(current)[k]
            )
            if changed:
                logging.warning(
                    "Resuming with a changed config (%s); the checkpoint wins for "
                    "what was already done.",
                    ", ".join(changed),
                )
        io_utils.write_json(path, current)


def _describe(model: keras.Model, metrics: dict[str, float]) -> dict[str, Any]:
    """Metrics, size and filters per group of a model, for the state and the report."""
    model_stats = stats.model_stats(model)
    return {
        **metrics,
        "params": model_stats.params,
        "macs": model_stats.macs,
        "filters": filters_per_group(model),
        "stats": model_stats.to_dict(),
    }


def _load_baseline(path: str) -> keras.Model:
    if not Path(path).is_file():
        raise RunError(f"train.baseline_model={path!r} does not exist; give a .keras file.")
    logging.info("Starting from the trained model %s (no baseline training).", path)
    return keras.saving.load_model(path, compile=False)


def _prepare_workdir(workdir: str | os.PathLike) -> Path:
    path = Path(workdir).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise RunError(
            f"Cannot write to workdir {path}: {e.strerror}. Choose another "
            "--workdir or fix its permissions."
        ) from e
    return path


def _worker_dir(workdir: Path, strategy: tf.distribute.Strategy) -> Path:
    """Workers other than the chief of a multi-worker run write to their own subfolder."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or resolver.task_type in (None, "chief"):
        return workdir
    if resolver.task_type == "worker" and resolver.task_id == 0:
        return workdir
    sub = workdir / "workers" / f"{resolver.task_type}_{resolver.task_id}"
    sub.mkdir(parents=True, exist_ok=True)
    return sub


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _fmt_logs(logs: dict) -> str:
    return ", ".join(f"{k} {v:.4g}" for k, v in logs.items() if isinstance(v, float))
