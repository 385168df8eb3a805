"""nabla's differential test against PyTorch, the comparison.

    /usr/bin/python3 tests/torch_diff.py OUT.jsonl

reads what build/tests/torch_diff wrote (tests/torch_diff.c says what each
line holds), rebuilds every graph in torch in the graph's dtype, computes
the same result, loss gradient, Hessian-vector product and Jacobian-vector
product, replays every optimizer run with torch.optim, checks every refusal,
and prints each mismatch and a summary line:
    torch-diff: N graphs, M optimizer runs, K refusals, 0 mismatches
Exit status 1 on any mismatch.

Tolerances.  float64: max |nabla - torch| <= 1e-9 (1 + max |torch|) over a
tensor (hvp and jvp 1e-8).  float32: nabla's float32 is held to torch's own
float32 accuracy: the same graph is run in float64 from the same float32
values, and nabla may differ from that by 10x torch-float32's error plus
1e-4 (5e-4 for second derivatives) times (1 + max |torch|), the whole
multiplied by the amplification of the graph's normalisations (the product
of their largest 1/sqrt(var + eps), at least 1): a layer norm of a row that
is nearly constant multiplies rounding by up to 1/sqrt(eps) = 316, and its
gradients cancel to about 0 from terms that size (graph 971 of seed 3:
three copies of one value, nabla -1.2e-4, exactly 0 in float64, from terms
of 600).

Near ties.  Where a kink's two sides, or an arg-max's two best, are apart
by less than rounding (1e-9 of the values in float64, 1e-4 in float32) and
the values were computed rather than given, the side each takes is decided
by rounding, not by the semantics: argmax(cos(batch_norm(x))) of two rows
is a tie in exact arithmetic (cos(-1) = cos(1)) that rounding breaks either
way.  A graph that differs and met such a tie is counted as skipped, and
the first few are listed; one that agrees counts as compared (exact ties,
as between copies of one value, are compared: row 11's first arg-max).
"""
import json
import math
import sys

import torch
import torch.nn.functional as F

torch.set_num_threads(1)

# README "Where nabla differs from PyTorch", the rows this test meets; the
# one place the expected differences are written down.
DIFFERENCES = {
    "empty": "row 1: a dimension of size 0 is refused, NB_ERR_SHAPE (NB_ERR_ARG for nb_reshape)",
    "dtypes": "row 2: operands of two dtypes are refused, NB_ERR_DTYPE",
    "integers": "row 3: indices are floats holding whole numbers, others refused",
    "clamp": "row 4: nb_clamp with lo > hi or a NaN bound is refused, NB_ERR_ARG",
    "var": "row 5: nb_var_axis with a correction >= the axis's size is refused, NB_ERR_ARG",
    "clip_bound": "row 6: nb_clip_grad_norm with max_norm <= 0 returns NaN, gradients unchanged",
    "clip_nan": "row 7: nb_clip_grad_norm of a NaN norm leaves the gradients unchanged",
    "smooth_l1_beta0": "row 8: smooth_l1 with beta 0 is the L1 loss (derivative 0 at d = 0): compared with F.l1_loss",
    "pool_padding": "row 9: max pooling windows wholly in the padding: not generated (torch reads outside the row)",
    "hvp_create_graph": "row 10: nb_hvp's v is a constant: not tested with create_graph",
    "max_axis": "row 11: max_axis/min_axis send the gradient to the first arg-max: compared with torch.max(x, dim)",
    "dropout": "row 12: nabla's own dropout masks: torch is given the mask nabla drew (where its result is nonzero)",
    "f32_sums": "row 13: float32 sums accumulate in float64: float32 compared with a tolerance",
    "subnormal": "row 14: optimizers flush subnormals: the runs' values stay far above them",
    "leaf_output": "row 15: an output that is a leaf (nb_dropout in evaluation, nb_sum_to to its own shape give "
                   "their input itself) is refused by nb_jvp (and nb_backward, nb_grad), NB_ERR_STATE",
    "attention_dropout": "row 17: the fused attention's dropout mask is nabla's (a hash seeded by one draw): torch "
                         "is given it (nb_attention_dropout_mask)",
    "cosine": "row 16: NB_SCHEDULE_COSINE stays at min_lr after total steps (torch's CosineAnnealingLR "
              "rises again): the runs stop before total",
}

# The refusal checks of tests/torch_diff_opt.c: the status each must give.
REFUSALS = {
    "empty_slice": ("shape mismatch", "empty"), "empty_zeros": ("shape mismatch", "empty"),
    "empty_index_select": ("shape mismatch", "empty"), "empty_reshape": ("invalid argument", "empty"),
    "mixed_dtypes": ("dtype mismatch", "dtypes"), "gather_fraction": (None, "integers"),
    "ce_fraction": (None, "integers"), "clamp_reversed": ("invalid argument", "clamp"),
    "clamp_nan": ("invalid argument", "clamp"), "var_correction": ("invalid argument", "var"),
    "write_backward": ("invalid state", "header: values changed between an op and its backward"),
    "write_grad": ("invalid state", "header: values changed between an op and its backward"),
    "write_grad_create_graph": ("invalid state", "header: values changed between an op and its backward"),
    "write_hvp": ("invalid state", "header: values changed between an op and its backward"),
    "write_jvp": ("invalid state", "header: values changed between an op and its backward"),
    "jvp_tangent_shape": ("shape mismatch", "nb_jvp: a tangent of another shape"),
    "jvp_tangent_dtype": ("dtype mismatch", "nb_jvp: a tangent of another dtype"),
    "jvp_no_tangents": ("NULL argument", "nb_jvp: NULL tangents"),
    "jvp_no_result": ("NULL argument", "nb_jvp: NULL result"),
    "jvp_n_zero": ("NULL argument", "nb_jvp: nothing to differentiate with respect to"),
    "hvp_vector_shape": ("shape mismatch", "nb_hvp: a vector of another shape"),
}

DT = {"float32": torch.float32, "float64": torch.float64}

# What the rebuild of the graph being compared found out about its numerics
# (reset by compare_graph): the normalisations' amplification, and whether
# a kink or an arg-max met a near tie in computed values.
NUMERICS = {"amp": 1.0, "tie": None}


def note_amplification(var, eps):
    amp = (1 / torch.sqrt(var.detach().to(torch.float64) + eps)).max().item() if var.numel() else 1.0
    NUMERICS["amp"] *= max(1.0, amp)


def check_tie(s, gap, what):
    """gap: how far computed values are from a kink or from a tie; a gap
    within rounding (but the values not given as they are) is a near tie."""
    if not s.get("computed") or gap.numel() == 0:
        return
    g = gap.detach().to(torch.float64).abs()
    tol = (1e-9 if s["graph_dtype"] == "float64" else 1e-4) * (1 + s["size"])
    if bool((g <= tol).any()) and not NUMERICS["tie"]:
        NUMERICS["tie"] = "%s within %.3g of a %s" % (s["op"], g.min().item(), what)


def top_two_gap(x, ax):
    if x.dim() == 0 or x.shape[ax] < 2:
        return torch.zeros(0)
    top = torch.topk(x.detach(), 2, dim=ax).values
    return top.select(ax, 0) - top.select(ax, 1)


def tensor(t, dtype):
    return torch.tensor(t["data"], dtype=dtype).reshape(t["shape"])


def tolist(x):
    return x.detach().reshape(-1).tolist()


def op_apply(s, a, dtype):
    """The torch call for one step; a holds its arguments (None for NULL)."""
    op = s["op"]
    x = a[0] if a else None
    unary = {"neg": torch.neg, "exp": torch.exp, "log": torch.log, "sigmoid": torch.sigmoid, "tanh": torch.tanh,
             "relu": torch.relu, "square": torch.square, "sin": torch.sin, "cos": torch.cos, "abs": torch.abs,
             "sqrt": torch.sqrt, "erf": torch.erf, "log1p": torch.log1p, "expm1": torch.expm1, "softplus": F.softplus,
             "gelu": F.gelu, "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"), "detach": torch.Tensor.detach,
             "sum": torch.sum, "mean": torch.mean}
    if op in ("relu", "abs", "leaky_relu"):
        check_tie(s, x, "kink at 0")
    if op in unary:
        return unary[op](x)
    binary = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "maximum": torch.maximum,
              "minimum": torch.minimum}
    if op in ("maximum", "minimum"):
        check_tie(s, a[0] - a[1], "tie")
    if op in binary:
        return binary[op](a[0], a[1])
    if op == "scale":
        return x * s["s"]
    if op == "add_scalar":
        return x + s["s"]
    if op == "leaky_relu":
        return F.leaky_relu(x, s["slope"])
    if op == "pow":
        return torch.pow(x, s["p"])
    if op == "clamp":
        check_tie(s, torch.minimum((x - s["lo"]).abs(), (x - s["hi"]).abs()), "bound")
        return torch.clamp(x, s["lo"], s["hi"])
    if op == "where":
        return torch.where(a[0] != 0, a[1], a[2])
    ax, kd = s.get("axis"), bool(s.get("keepdims"))
    if op == "sum_axis":
        return torch.sum(x, ax, keepdim=kd)
    if op == "mean_axis":
        return torch.mean(x, ax, keepdim=kd)
    if op == "logsumexp":
        return torch.logsumexp(x, ax, keepdim=kd)
    if op == "var_axis":
        return torch.var(x, ax, correction=s["correction"], keepdim=kd)
    if op in ("max_axis", "min_axis", "argmax", "argmin"):
        check_tie(s, top_two_gap(x if op in ("max_axis", "argmax") else -x, ax), "tie")
    if op == "max_axis":  # DIFFERENCES["max_axis"]
        return torch.max(x, ax, keepdim=kd).values
    if op == "min_axis":
        return torch.min(x, ax, keepdim=kd).values
    if op in ("argmax", "argmin"):
        return (torch.argmax if op == "argmax" else torch.argmin)(x, ax, keepdim=kd).to(dtype)
    if op == "reshape":
        return x.reshape(s["shape"])
    if op == "squeeze":
        return x.squeeze(ax)
    if op == "unsqueeze":
        return x.unsqueeze(ax)
    if op == "transpose":
        return x.transpose(s["a0"], s["a1"]) if x.dim() else x
    if op == "permute":
        return x.permute(s["axes"])
    if op == "broadcast_to":
        return torch.broadcast_to(x, s["shape"])
    if op == "sum_to":  # the sum over axes that broadcasting would have made
        shape = s["shape"]
        lead = x.dim() - len(shape)
        y = x.sum(list(range(lead))) if lead else x
        axes = [d for d, n in enumerate(shape) if n == 1 and y.shape[d] != 1]
        return y.sum(axes, keepdim=True) if axes else y
    if op == "pad":
        p = s["pads"]
        flat = []
        for d in reversed(range(x.dim())):
            flat += [p[2 * d], p[2 * d + 1]]
        return F.pad(x, flat) if flat else x
    if op == "cast":  # in the float64 rerun of a float32 graph, float64 throughout
        return x.to(DT[s["dtype"]] if dtype != torch.float64 or s["dtype"] != "float32" or not s.get("rerun") else dtype)
    if op == "slice":
        idx = [slice(None)] * x.dim()
        idx[ax] = slice(s["start"], s["stop"], s["step"])
        return x[tuple(idx)]
    if op == "index_select":
        return torch.index_select(x, ax, torch.tensor(s["indices"], dtype=torch.long))
    if op == "gather":
        return torch.gather(x, ax, a[1].detach().long())
    if op == "concat":
        return torch.cat(a, ax)
    if op == "stack":
        return torch.stack(a, ax)
    if op == "softmax":
        return torch.softmax(x, ax)
    if op == "log_softmax":
        return torch.log_softmax(x, ax)
    if op == "layer_norm":  # composed: F.layer_norm's double backward fails on a weight without gradient
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        note_amplification(var, s["eps"])
        y = (x - mu) / torch.sqrt(var + s["eps"])
        y = y * a[1] if a[1] is not None else y
        return y + a[2] if a[2] is not None else y
    if op == "dropout":  # DIFFERENCES["dropout"]: the mask is nabla's
        if not s["training"] or s["p"] == 0:
            return x
        return x * s["mask"] / (1 - s["p"])
    if op == "attention":  # composed: torch 1.13 has no F.scaled_dot_product_attention
        sc = a[0] @ a[1].transpose(-1, -2) * s["scale"]
        if len(a) > 3:
            sc = sc.masked_fill(a[3] == 0, float("-inf")) if s["bool"] else sc + a[3]
        if s["causal"]:
            L, S = sc.shape[-2], sc.shape[-1]
            sc = sc.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
        w = torch.softmax(sc, -1)
        if s["dmask"] is not None:  # DIFFERENCES["attention_dropout"]
            w = w * torch.tensor(s["dmask"], dtype=dtype).reshape(w.shape) / (1 - s["p"])
        return w @ a[2]
    if op == "mse":
        return F.mse_loss(a[0], a[1])
    if op == "bce":
        return F.binary_cross_entropy(a[0], a[1])
    if op == "bce_logits":
        return F.binary_cross_entropy_with_logits(a[0], a[1])
    if op == "huber":
        return F.huber_loss(a[0], a[1], delta=s["delta"])
    if op == "smooth_l1":
        if s["beta"] == 0:  # DIFFERENCES["smooth_l1_beta0"]
            return F.l1_loss(a[0], a[1])
        return F.smooth_l1_loss(a[0], a[1], beta=s["beta"])
    if op == "softmax_cross_entropy":
        t = a[1]
        if x.dim() >= 2:
            x = x.movedim(ax, 1)
            if t.dim() == a[0].dim():
                t = t.movedim(ax, 1)
        if t.dim() < a[0].dim():
            t = t.detach().long()
        return F.cross_entropy(x, t)
    if op in ("split_heads", "split_qkv"):
        x = a[0]
        if op == "split_qkv":
            x = x.split(x.shape[-1] // 3, dim=-1)[s["part"]]
        return x.unflatten(-1, (s["H"], -1)).transpose(-3, -2)
    if op == "merge_heads":
        return a[0].transpose(-3, -2).flatten(-2)
    if op == "linear_torch":
        return F.linear(a[0], a[1], a[2])
    if op in ("matmul", "matmul_t", "linear", "linear_t"):
        A, B = a[0], a[1]
        if s.get("ta"):
            A = A.transpose(-1, -2)
        if s.get("tb"):
            B = B.transpose(-1, -2)
        y = torch.matmul(A, B)
        return y + a[2] if op.startswith("linear") else y
    if op in ("conv1d", "conv2d"):
        one = op == "conv1d"
        kw = dict(stride=s["stride"][0] if one else s["stride"], padding=s["padding"][0] if one else s["padding"],
                  dilation=s["dilation"][0] if one else s["dilation"], groups=s["groups"])
        y = (F.conv1d if one else F.conv2d)(a[0], a[1], a[2], **kw)
        return torch.relu(y) if s["relu"] else y
    if op in ("conv_transpose1d", "conv_transpose2d"):
        one = op == "conv_transpose1d"
        pick = (lambda v: v[0]) if one else (lambda v: v)
        return (F.conv_transpose1d if one else F.conv_transpose2d)(
            a[0], a[1], a[2], stride=pick(s["stride"]), padding=pick(s["padding"]),
            output_padding=pick(s["output_padding"]), groups=s["groups"], dilation=pick(s["dilation"]))
    if op.startswith("upsample_"):
        dims = 1 if op == "upsample_nearest1d" else 2
        mode = "bilinear" if op == "upsample_bilinear2d" else "nearest"
        kw = dict(align_corners=bool(s["align_corners"])) if mode == "bilinear" else {}
        if s["factor"][0]:
            return F.interpolate(x, scale_factor=tuple(s["factor"][:dims]), mode=mode, **kw)
        return F.interpolate(x, size=tuple(s["out_size"][:dims]), mode=mode, **kw)
    if op in ("max_pool2d", "avg_pool2d"):
        k = s["kernel"]
        st = [v if v else k[i] for i, v in enumerate(s["stride"])]
        if op == "max_pool2d":
            return F.max_pool2d(x, k, st, s["padding"], s["dilation"], ceil_mode=bool(s["ceil_mode"]))
        return F.avg_pool2d(x, k, st, s["padding"], ceil_mode=bool(s["ceil_mode"]),
                            count_include_pad=not s["exclude_pad"])
    if op == "batch_norm":  # composed, as layer_norm; the running statistics as F.batch_norm updates them
        axes = [0] + list(range(2, x.dim()))
        shape = [1, -1] + [1] * (x.dim() - 2)
        if s["training"] or s["rm"] is None:
            mu, var = x.mean(axes), x.var(axes, unbiased=False)
            if s["rm"] is not None:
                n = x.numel() // x.shape[1]
                with torch.no_grad():
                    s["rm"].mul_(1 - s["momentum"]).add_(s["momentum"] * mu)
                    s["rv"].mul_(1 - s["momentum"]).add_(s["momentum"] * var * n / (n - 1))
        else:
            mu, var = s["rm"], s["rv"]
        note_amplification(var, s["eps"])
        y = (x - mu.reshape(shape)) / torch.sqrt(var.reshape(shape) + s["eps"])
        y = y * a[1].reshape(shape) if a[1] is not None else y
        return y + a[2].reshape(shape) if a[2] is not None else y
    raise KeyError("torch_diff.py does not know op " + op)


def run_graph(d, dtype):
    """Rebuilds graph d in dtype; returns (leaves, y, loss, running stats)."""
    vals, leaves = {}, []
    for lf in d["leaves"]:
        t = tensor(lf["value"], dtype)
        if lf["grad"]:
            t.requires_grad_(True)
        vals[lf["id"]] = t
        leaves.append((lf, t))
    n_leaves = len(d["leaves"])
    leaf_ids = {lf["id"] for lf in d["leaves"]}
    running = []
    # values are numbered leaves and steps in the order they were made:
    # a leaf may be made after some steps, so number steps into the gaps
    step_ids = [i for i in range(n_leaves + len(d["steps"])) if i not in vals]
    for k, s in enumerate(d["steps"]):
        a = [vals[i] if i >= 0 else None for i in s["a"]]
        s = dict(s, rerun=DT[d["dtype"]] != dtype, graph_dtype=d["dtype"],
                 computed=bool(s["a"]) and s["a"][0] >= 0 and s["a"][0] not in leaf_ids,
                 size=max((float(v.detach().abs().max()) for v in a if v is not None and v.numel()), default=0.0))
        if s["op"] in ("maximum", "minimum"):
            s["computed"] = any(i >= 0 and i not in leaf_ids for i in s["a"])
        if s["op"] == "dropout" and s["training"] and s["p"] > 0:
            s["mask"] = torch.tensor(s["mask"], dtype=dtype).reshape(a[0].shape)
        if s["op"] == "batch_norm":
            if s["running"]:
                s["rm"] = tensor(d["running_mean0"], dtype)
                s["rv"] = tensor(d["running_var0"], dtype)
                running = [s["rm"], s["rv"]]
            else:
                s["rm"] = s["rv"] = None
        vals[step_ids[k]] = op_apply(s, a, dtype)
    y = vals[d["y_id"]]
    R = torch.tensor(d["R"], dtype=dtype).reshape(y.shape) if "R" in d else None
    loss = (R * y + torch.tensor(d["S"], dtype=dtype).reshape(y.shape) * y * y).sum() if R is not None else None
    return leaves, y, loss, running


def derivs(d, dtype):
    leaves, y, loss, running = run_graph(d, dtype)
    out = {"y": y.detach(), "loss": loss.detach() if loss is not None else None}
    for i, r in enumerate(running):
        out["heap%d" % i] = r
    wrt = [t for lf, t in leaves if lf["grad"]]
    if "grads" not in d or not wrt:
        return out
    if not loss.requires_grad:
        z = [torch.zeros_like(t) for t in wrt]
        out.update(grads=z, hvp=z, jvp=torch.zeros_like(y))
        return out
    g = torch.autograd.grad(loss, wrt, create_graph=True, allow_unused=True)
    g = [torch.zeros_like(w) if gi is None else gi for gi, w in zip(g, wrt)]
    v = [torch.tensor(vi, dtype=dtype).reshape(w.shape) for vi, w in zip(d["v"], wrt)]
    dot = sum((gi * vi).sum() for gi, vi in zip(g, v))
    hv = torch.autograd.grad(dot, wrt, retain_graph=True, allow_unused=True) if dot.requires_grad else [None] * len(wrt)
    out["grads"] = [gi.detach() for gi in g]
    out["hvp"] = [torch.zeros_like(w) if h is None else h for h, w in zip(hv, wrt)]
    if "jvp" in d:  # the double-vjp trick: u -> J^T u, then d(J^T u . t)/du = J t
        u = torch.zeros_like(y, requires_grad=True)
        if y.requires_grad:
            gu = torch.autograd.grad(y, wrt, u, create_graph=True, allow_unused=True)
            t = [torch.tensor(ti, dtype=dtype).reshape(w.shape) for ti, w in zip(d["t"], wrt)]
            s = sum((gi * ti).sum() for gi, ti in zip(gu, t) if gi is not None)
            jv = torch.autograd.grad(s, u, allow_unused=True)[0] if torch.is_tensor(s) and s.requires_grad else None
        else:
            jv = None
        out["jvp"] = torch.zeros_like(y) if jv is None else jv
    return out


def err(nb, ref):
    """Max abs error and the scale it is measured against."""
    a = torch.tensor(nb, dtype=torch.float64).reshape(-1)
    b = ref.detach().to(torch.float64).reshape(-1)
    if a.numel() != b.numel():
        return math.inf, 1.0
    both_nan = torch.isnan(a) & torch.isnan(b)
    same_inf = torch.isinf(a) & (a == b)
    ok = both_nan | same_inf
    diff = torch.where(ok, torch.zeros_like(a), (a - b).abs())
    diff = torch.where(torch.isnan(diff), torch.full_like(diff, math.inf), diff)
    fin = b[torch.isfinite(b)]
    scale = 1.0 + (fin.abs().max().item() if fin.numel() else 0.0)
    return (diff.max().item() if diff.numel() else 0.0), scale


def compare_graph(d, report):
    name = " -> ".join(s["op"] for s in d["steps"])
    where = "graph %d (%s, %s)" % (d["g"], d["dtype"], name)
    if "error" in d:
        report.append("%s: nabla refused: %s" % (where, d["error"]))
        return
    dtype = DT[d["dtype"]]
    if "deriv_error" in d:
        report.append("%s: derivatives refused: %s" % (where, d["deriv_error"]))
        return
    NUMERICS.update(amp=1.0, tie=None)
    try:
        ref = derivs(d, dtype)
        NUMERICS["amp"] = 1.0  # measured again, in float64
        ref64 = derivs(d, torch.float64) if dtype == torch.float32 else None
    except Exception as e:  # noqa: BLE001 (torch refusing is a finding too)
        report.append("%s: torch failed: %s: %s" % (where, type(e).__name__, e))
        return
    items = [("y", d["y"]["data"], "y")]
    if "loss" in d and ref["loss"] is not None:
        items.append(("loss", [d["loss"]], "loss"))
    for i in range(2):
        if "heap%d" % i in d and "heap%d" % i in ref:
            items.append(("running stat %d" % i, d["heap%d" % i]["data"], "heap%d" % i))
    for k in ("grads", "hvp"):
        for i, vals in enumerate(d.get(k, [])):
            items.append(("%s[%d]" % (k, i), vals, (k, i)))
    if "jvp" in d:
        items.append(("jvp", d["jvp"], "jvp"))
    if "jvp_error" in d:
        if not (d["y_is_leaf"] and "invalid state" in d["jvp_error"]):  # DIFFERENCES["leaf_output"]
            report.append("%s: nb_jvp refused: %s" % (where, d["jvp_error"]))

    def get(r, key):
        if isinstance(key, tuple):
            return r[key[0]][key[1]]
        return r[key].reshape(-1) if key != "loss" else r[key].reshape(1)

    for label, nb, key in items:
        if (key[0] if isinstance(key, tuple) else key) not in ref:
            continue
        e, scale = err(nb, get(ref, key))
        second = label.startswith("hvp") or label == "jvp"
        if ref64 is None and any(st["op"] == "cast" for st in d["steps"]):
            tol = 3e-5 * scale  # a float64 graph that passes through float32
        elif ref64 is None:
            tol = (1e-8 if second else 1e-9) * scale
        else:
            e32, _ = err(tolist(get(ref, key)), get(ref64, key))
            e, scale = err(nb, get(ref64, key))
            tol = (10 * (e32 if math.isfinite(e32) else 0) + (5e-4 if second else 1e-4) * scale) * NUMERICS["amp"]
        if not e <= tol:
            shapes = " ".join("x".join(map(str, lf["value"]["shape"])) or "()" for lf in d["leaves"])
            report.append("%s: %s differs: max abs %.3g, rel %.3g (tolerance %.3g); leaves %s" %
                          (where, label, e, e / scale, tol, shapes))


def compare_optimizer(d, report):
    """Each step is taken by torch from nabla's parameters before it (the
    same gradients, so that rounding cannot grow over the run: Adam and
    RMSprop end in 2-cycles about the minimum, which amplify it) and must
    give nabla's parameters after it: 1e-12 relative in float64, 1e-5 in
    float32."""
    where = "optimizer run %d (%s, %s, schedule %d%s)" % (d["run"], d["dtype"], d["optimizer"], d["schedule"],
                                                          ", clip %.3g" % d["clip"] if d["clip"] else "")
    replay(d, DT[d["dtype"]], where, report)


def replay(d, dtype, where, report):
    w = torch.tensor(d["w0"], dtype=dtype, requires_grad=True)
    A, c = torch.tensor(d["A"], dtype=dtype), torch.tensor(d["c"], dtype=dtype)
    kind, lr = d["optimizer"], d["lr"]
    wd = d["weight_decay"]
    if kind == "sgd":
        opt = torch.optim.SGD([w], lr=lr, weight_decay=wd)
    elif kind == "momentum":
        opt = torch.optim.SGD([w], lr=lr, momentum=d["momentum"], weight_decay=wd)
    elif kind == "adam":
        opt = torch.optim.Adam([w], lr=lr, betas=(d["beta1"], d["beta2"]), eps=d["eps"], weight_decay=wd)
    elif kind == "adamw":
        opt = torch.optim.AdamW([w], lr=lr, betas=(d["beta1"], d["beta2"]), eps=d["eps"], weight_decay=wd)
    elif kind == "rmsprop":
        opt = torch.optim.RMSprop([w], lr=lr, alpha=d["beta2"], eps=d["eps"], weight_decay=wd)
    else:
        report.append("%s: unknown optimizer %s" % (where, kind))
        return None
    if d["schedule"] == 1:
        sched = torch.optim.lr_scheduler.StepLR(opt, d["step_size"], d["gamma"])
    elif d["schedule"] == 2:  # DIFFERENCES["cosine"]: iters <= total
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, d["total"], d["min_lr"])
    else:
        sched = None
    if report is not None and not d["ok"]:
        report.append("%s: nabla failed" % where)
    for it in range(d["iters"]):
        lr_t = opt.param_groups[0]["lr"]
        if report is not None and abs(lr_t - d["lrs"][it]) > 1e-12 * (1 + abs(lr_t)):
            report.append("%s: learning rate at step %d: nabla %.17g, torch %.17g" % (where, it, d["lrs"][it], lr_t))
            return None
        if report is not None and it > 0:  # each step from nabla's w: the same gradients, no drift
            with torch.no_grad():
                w.copy_(torch.tensor(d["ws"][it - 1], dtype=dtype))
        opt.zero_grad()
        loss = 0.5 * (A * (w - c) ** 2).sum() + 0.1 * torch.sin(3 * w).sum()
        loss.backward()
        if d["clip"]:
            n = torch.nn.utils.clip_grad_norm_([w], d["clip"]).item()
            if report is not None and abs(n - d["norms"][it]) > (1e-9 if dtype == torch.float64 else 1e-5) * (1 + abs(n)):
                report.append("%s: gradient norm at step %d: nabla %.9g, torch %.9g" % (where, it, d["norms"][it], n))
                return None
        opt.step()
        if report is not None:
            e, scale = err(d["ws"][it], w)
            if not e <= (1e-12 if dtype == torch.float64 else 1e-5) * scale:
                report.append("%s: parameters after step %d differ: max abs %.3g, rel %.3g" %
                              (where, it + 1, e, e / scale))
                return None
        if sched:
            sched.step()
    return w


def compare_refusal(d, report):
    what = d["what"]
    if d["kind"] == "clip":
        if what == "clip_zero":  # DIFFERENCES["clip_bound"]
            ok = d["returned"] != d["returned"] or d["returned"] == "NaN"
            ok = ok and d["status"] == "invalid argument" and d["grad"] == [2, 4]
        else:  # DIFFERENCES["clip_nan"]
            ok = d["returned"] != d["returned"] and d["grad"][0] != d["grad"][0] and d["grad"][1] == 4
        if not ok:
            report.append("refusal %s: %s: got %s" % (what, DIFFERENCES[what.replace("clip_zero", "clip_bound")
                                                               .replace("clip_nan_norm", "clip_nan")], d))
        return
    want, row = REFUSALS[what]
    row = DIFFERENCES.get(row, row)
    if (want is None and d["status"] == "success") or (want is not None and d["status"] != want):
        report.append("refusal %s: expected %s (%s), nabla gave %s" % (what, want or "an error", row, d["status"]))


def main():
    report, ties, counts = [], [], {"graph": 0, "optimizer": 0, "refusal": 0}
    with open(sys.argv[1]) as f:
        for line in f:
            d = json.loads(line)
            kind = "refusal" if d["kind"] == "clip" else d["kind"]
            counts[kind] += 1
            before = len(report)
            {"graph": compare_graph, "optimizer": compare_optimizer, "refusal": compare_refusal}[kind](d, report)
            if kind == "graph" and NUMERICS["tie"] and len(report) > before:
                ties.append("graph %d: %s (%s)" % (d["g"], NUMERICS["tie"], report[before]))
                del report[before:]
    for r in report:
        print(r)
    for t in ties[:5]:
        print("skipped, near tie: " + t)
    print("torch-diff: %d graphs (%d skipped at near ties), %d optimizer runs, %d refusals, %d mismatches" %
          (counts["graph"], len(ties), counts["optimizer"], counts["refusal"], len(report)))
    return 1 if report else 0


if __name__ == "__main__":
    sys.exit(main())
