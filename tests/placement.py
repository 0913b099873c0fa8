"""A device-placement and host-read check that runs on a CPU.

    with Placement(trainer.model, trainer.est, trainer.task) as p:
        ...                                   # a training step, an evaluation
    p.violations                              # [(op, detail)]: host tensors meeting device ones
    p.reads                                   # [(op, detail)]: device values read on the host

On a CPU every tensor is on one device, so the two GPU failures this looks
for cannot happen and must be simulated:
- placement: the model's parameters and buffers, the estimator's and the
  task's data are tagged "device" (on a GPU they are there); a factory
  call (torch.zeros, tensor, arange, ...) without `device=` (or with
  device=None or the literal "cpu": host on purpose, as Adam's step count)
  makes a "host" tensor. Tags flow through every op (any device
  input: device; else any host input: host). An op that takes a device tensor
  and a host tensor of one or more dimensions is a violation: the
  "expected all tensors on the same device" error a GPU raises (0-dim CPU
  tensors mix freely, so they are fine). `.to(...)` with a device or tensor
  argument, `.cuda()` and *_like of a device tensor make device tensors.
- reads: `.item()`, float/int/bool of a tensor, `.cpu()`, `.to("cpu")`, `.numpy()`,
  `.tolist()`, nonzero, unique, masked_select, and indexing (get or set) with
  a boolean mask, of a tensor that is not host-tagged: each one waits for the
  device (a host sync). Reads of host tensors (an optimiser's CPU step count)
  are free and not counted.

Tags are a Python attribute on the tensor object; gradients made by the
autograd engine carry none (neither side), which only loses a few checks.
`ALLOWED_READS` names the reads the code declares as deliberate.
"""
from __future__ import annotations

import traceback
from typing import Iterable

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

TAG = "_placement_tag"
FACTORIES = {"zeros", "ones", "empty", "full", "rand", "randn", "randint", "randperm",
             "arange", "range", "linspace", "logspace", "eye", "tensor", "as_tensor",
             "scalar_tensor", "empty_strided", "tril_indices", "triu_indices", "from_numpy"}
READS = {"item", "__float__", "__int__", "__bool__", "__index__", "cpu", "numpy", "tolist",
         "nonzero", "argwhere", "unique", "unique_consecutive", "masked_select"}
MASKED = {"__getitem__", "__setitem__"}
# reads the code declares on purpose (a comment at the read says why), as
# (op, "dir/file.py:function") of the calling frame; none in a training step today
ALLOWED_READS: set = set()


def tag(t: torch.Tensor, where: str) -> None:
    try:
        setattr(t, TAG, where)
    except (AttributeError, RuntimeError):
        pass


def tag_of(t) -> str | None:
    return getattr(t, TAG, None) if isinstance(t, torch.Tensor) else None


def tensors(obj) -> list:
    return [x for x in tree_flatten(obj)[0] if isinstance(x, torch.Tensor)]


def device_tensors(*objs) -> Iterable[torch.Tensor]:
    """Tensors that live on the device in a real run: modules' parameters and
    buffers, and the tensors a task holds (its splits)."""
    for obj in objs:
        if isinstance(obj, torch.nn.Module):
            yield from obj.parameters()
            yield from obj.buffers()
        else:                                   # a task: its data dict of Batches
            for v in vars(obj).values():
                if isinstance(v, dict):
                    for b in v.values():
                        yield from (x for x in vars(b).values() if isinstance(x, torch.Tensor)) \
                            if hasattr(b, "__dict__") else tensors(b)


def _caller() -> str:
    """file:line function of the first frame outside torch and this module."""
    for fr in reversed(traceback.extract_stack()):
        if "/torch/" not in fr.filename and fr.filename != __file__:
            return f"{'/'.join(fr.filename.split('/')[-2:])}:{fr.lineno} {fr.name}"
    return "?"


def _device_kwarg(kwargs) -> bool:
    """device= names the run's device: not None, not the literal "cpu" (host on purpose)."""
    return kwargs.get("device") is not None and kwargs["device"] != "cpu"


def _to_host(name: str, args, kwargs) -> bool:
    return name == "to" and (kwargs.get("device") == "cpu" or "cpu" in args[1:2])


def _moves_to_device(name: str, args, kwargs) -> bool:
    if name == "cuda":
        return True
    if name != "to":
        return False
    if _device_kwarg(kwargs):
        return True
    return any(isinstance(a, (torch.device, torch.Tensor)) or (isinstance(a, str) and a != "cpu")
               for a in args[1:])


def _masked(args) -> bool:
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool and i.dim() > 0
               for i in tensors(args[1:2]))


class Placement(TorchFunctionMode):
    def __init__(self, *holders):
        super().__init__()
        for t in device_tensors(*holders):
            tag(t, "device")
        self.violations: list = []
        self.reads: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        ins = tensors((args, kwargs))
        tags = [tag_of(t) for t in ins]
        if "device" in tags:
            host = [t for t, g in zip(ins, tags) if g == "host" and t.dim() > 0]
            if host:
                self.violations.append((name, f"host tensor {tuple(host[0].shape)} meets a "
                                              f"device tensor at {_caller()}"))
        read = name in READS or (name in MASKED and _masked(args)) or _to_host(name, args, kwargs)
        if read and ins and tag_of(ins[0]) != "host" and (name, _where()) not in ALLOWED_READS:
            self.reads.append((name, _caller()))
        out = func(*args, **kwargs)
        if name in FACTORIES:
            new = "device" if _device_kwarg(kwargs) else "host"
        elif name.endswith("_like"):
            new = "device" if _device_kwarg(kwargs) else (tags[0] if tags else None)
        elif _to_host(name, args, kwargs):
            new = "host"
        elif _moves_to_device(name, args, kwargs) or "device" in tags:
            new = "device"
        else:
            new = "host" if "host" in tags else None
        if new is not None:
            for t in tensors(out):
                if tag_of(t) is None or new == "device":
                    tag(t, new)
        return out


def _where() -> str:
    c = _caller()
    return c.split(":", 1)[0] + ":" + c.rsplit(" ", 1)[-1]
