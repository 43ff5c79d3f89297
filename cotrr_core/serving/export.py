"""Export a run's model to ONNX: raw token features + mask -> raw scores, dynamic batch and list length.

The model standardises its inputs itself (model.Standardise), so the graph takes the same raw features
as `Reranker.rerank` (inputs are named after the spec's tokens, in spec order, then `mask`).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import Tensor, nn

from cotrr_core.artifacts import LoadedRun, load_run
from cotrr_core.config import ConfigError

__all__ = ["ScoringGraph", "export_onnx", "example_inputs", "refuse_blend"]


class ScoringGraph(nn.Module):
    """(raw token tensors [B, L, d_t] in spec order..., mask [B, L] bool) -> scores [B, L]: the run's model
    with positional inputs, as an exporter wants them."""

    def __init__(self, run: LoadedRun) -> None:
        super().__init__()
        self.model = run.model.eval()
        self.names = [t.name for t in run.spec.tokens]

    def forward(self, *inputs: Tensor) -> Tensor:
        *raw, mask = inputs
        return self.model(dict(zip(self.names, raw)), mask)


def example_inputs(run: LoadedRun, batch: int = 2, length: int = 5, seed: int = 0) -> tuple[Tensor, ...]:
    """Random raw features [batch, length, d] per token and a mask with one padded slot in list 0."""
    g = torch.Generator().manual_seed(seed)  # CPU inputs: export_onnx traces a run loaded on the CPU
    dims = run.meta["token_dims"]
    tokens = tuple(torch.randn(batch, length, dims[t.name], generator=g) for t in run.spec.tokens)
    mask = torch.ones(batch, length, dtype=torch.bool)
    mask[0, -1] = False
    return (*tokens, mask)


def export_onnx(run_dir: str | Path, out_path: str | Path, opset: int = 18) -> dict:
    """Write the ONNX graph; returns {path, exporter, opset, inputs}. Tries the dynamo exporter first.

    A run that serves a blend (blend.json with w > 0: the network plus LightGBM and ridge peers) is refused
    with a ConfigError naming the parts the graph would leave out: exporting the network alone would ship a
    different model from the one the run serves and reports.
    """
    run = load_run(run_dir, device="cpu")
    refuse_blend(run)
    graph = ScoringGraph(run).eval()
    args = example_inputs(run)
    names = [*graph.names, "mask"]
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for exporter in ("dynamo", "legacy"):
        try:
            _export(graph, args, names, out_path, opset, exporter)
            _add_metadata(out_path, run)
            return {"path": str(out_path), "exporter": exporter, "opset": opset, "inputs": names,
                    "errors": errors}
        except Exception as exc:  # noqa: BLE001 - fall back to the other exporter, keep the reason
            errors.append(f"{exporter}: {type(exc).__name__}: {str(exc)[:300]}")
    raise RuntimeError("ONNX export failed: " + " | ".join(errors))


def refuse_blend(run: LoadedRun) -> None:
    """ConfigError when the run serves more than its network (see export_onnx)."""
    if run.blend is None:
        return
    parts = ", ".join(p for p in run.blend.committee)
    raise ConfigError(
        f"{run.run_dir}: cannot export this run to ONNX: it serves a blend of its network with {parts} "
        f"(blend.json, weight {run.blend.weight:g}), and the ONNX graph covers the network only; the "
        f"{parts} part(s) cannot be exported. Serve the run with Reranker or `python -m cotrr_core serve`, "
        "or train with --set train.blend=off for an exportable network-only run")


def _export(graph: nn.Module, args: tuple, names: list[str], out: Path, opset: int, exporter: str) -> None:
    axes = {n: {0: "batch", 1: "list"} for n in names}
    axes["scores"] = {0: "batch", 1: "list"}
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch, length = torch.export.Dim("batch", min=1), torch.export.Dim("list", min=2)
            shapes = tuple({0: batch, 1: length} for _ in names)
            torch.onnx.export(graph, args, str(out), input_names=names, output_names=["scores"], opset_version=opset,
                              dynamo=True, dynamic_shapes=(shapes,), external_data=False)
        else:
            torch.onnx.export(graph, args, str(out), input_names=names, output_names=["scores"], opset_version=opset,
                              dynamo=False, dynamic_axes=axes)


def _add_metadata(path: Path, run: LoadedRun) -> None:
    import onnx

    model = onnx.load(str(path))
    meta = {"run_id": run.run_dir.name, "tokens": ",".join(t.name for t in run.spec.tokens),
            "temperature": repr(run.temperature), "inputs": "raw features (standardised in the graph), mask bool"}
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))
