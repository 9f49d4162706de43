"""The catalog's table: derivation name -> one-line description, the module that builds it, and
the options its command takes.

This module imports no SymPy, so the command line can list derivations without paying for it.
Adding a derivation: one module in this package with a ``build`` function, its wording in
``templates/derivations/NAME.toml``, and one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

STANDARD = ("classes", "logits", "target")
"""The options of every derivation command: the class count and a worked example's numbers."""


@dataclass(frozen=True)
class Entry:
    description: str
    module: str
    options: tuple[str, ...] = ()
    """Options beyond STANDARD, as keyword names of the module's ``build`` (``label_smoothing``
    is ``--label-smoothing`` on the command line). Those in ``naming.UNNAMED`` do not go into file names."""
    spec: bool = False
    """The entry is a spec file, ``derive/catalog/NAME.toml``, that the planner derives (see
    :mod:`derive.derivations.from_spec`); ``module`` is that module."""


PLANNED = "derive.derivations.from_spec"


CATALOG: dict[str, Entry] = {
    "softmax-ce": Entry(
        "Cross-entropy through a softmax layer: dE/dz_k = o_k - y_k",
        "derive.derivations.softmax_ce",
        ("temperature", "label_smoothing", "reduction", "let"),
    ),
    "softmax": Entry("The softmax Jacobian: do_i/dz_k = o_i (delta_ik - o_k)", "derive.derivations.softmax", ("let",)),
    "log-softmax": Entry("The log-softmax Jacobian: d ln o_i/dz_k = delta_ik - o_k", "derive.derivations.log_softmax", ("let",)),
    "sigmoid-bce": Entry("Binary cross-entropy through sigmoid outputs: dE/dz_k = o_k - y_k", "derive.derivations.sigmoid_bce", ("reduction", "let")),
    "sse-linear": Entry("Squared error through linear outputs: dE/dz_k = o_k - y_k", "derive.derivations.sse_linear", ("reduction", "let")),
    "mse-softmax": Entry(
        "Squared error through a softmax layer: the gradient is NOT o_k - y_k, but o_k ((o_k - y_k) - sum_i o_i (o_i - y_i))",
        "derive.derivations.mse_softmax",
        ("reduction", "let"),
    ),
    "dense-softmax-ce": Entry(
        "A dense layer before softmax-CE: dE/dW_kd = (o_k - y_k) x_d, dE/db_k = o_k - y_k",
        "derive.derivations.dense_softmax_ce",
        ("inputs", "let", "weight_decay", "reduction"),
    ),
    "focal": Entry("Focal loss through a softmax layer, for any focusing parameter gamma (gamma = 0 is cross-entropy)", PLANNED, ("gamma", "reduction", "let", "size"), spec=True),
    "kl-softmax": Entry("The KL divergence of the softmax from a target distribution: dE/dz_k = o_k - y_k", PLANNED, ("reduction", "let", "size"), spec=True),
    "tanh-sse": Entry("Half the squared error through tanh outputs: dE/dz_k = (o_k - y_k)(1 - o_k^2)", PLANNED, ("reduction", "let", "size"), spec=True),
    "batch-norm": Entry("Batch normalisation backward, one feature over a batch of N: the gradients by x_n, gamma and beta", PLANNED, ("let", "size"), spec=True),
    "layer-norm": Entry("Layer normalisation backward, one example over D features: the gradients by x_d, gamma_d and beta_d", PLANNED, ("let", "size"), spec=True),
    "attention": Entry(
        "Attention backward, one query q over H positions with keys k_j, values v_j and a mask, given the upstream gradient g: dL/dv_jd = a_j g_d, dL/dk_jd = q_d a_j sum_c g_c (v_jc - o_c) / sqrt(D), and dL/dq_d",
        PLANNED,
        ("let", "size"),
        spec=True,
    ),
    "mlp": Entry(
        "One sigmoid hidden layer before softmax-CE: dE/dV_md = delta_m h_m (1 - h_m) x_d with the backpropagated error delta_m = sum_i (o_i - y_i) W_im",
        PLANNED,
        ("weight_decay", "reduction", "let", "size"),
        spec=True,
    ),
    "gelu": Entry("GELU backward, y = x Phi(x), given the upstream gradient g: dL/dx_k = g_k (Phi(x_k) + x_k phi(x_k))", PLANNED, ("approximate", "let", "size"), spec=True),
}

VARIANTS: dict[str, dict[str, tuple[str, ...]]] = {"gelu": {"approximate": ("none", "tanh")}}
"""Options that choose another spec file: ``gelu --approximate tanh`` is ``derive/catalog/gelu-tanh.toml``;
the first value is the entry's own file."""


NUMBERED: dict[str, tuple[str, ...]] = {
    "softmax-ce": ("z", "y"),
    "softmax": ("z",),
    "log-softmax": ("z",),
    "sigmoid-bce": ("z", "y"),
    "sse-linear": ("z", "y"),
    "mse-softmax": ("z", "y"),
}
"""The entries built by a module whose --let names the logits z and the target y: their
--logits and --target, by the names of the documents' definitions."""


BATCHED: dict[str, dict[str, str]] = {"softmax-ce": {"temperature": "T", "label_smoothing": "epsilon"}}
"""The loss entries built by a module whose --reduction is their spec file over a batch: each
option a spec file of its own (softmax-ce-temperature.toml), its value the worked example's
number of the letter given here."""
