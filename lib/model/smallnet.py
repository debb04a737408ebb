"""A network built for small images (28-32 px), registered in timm's model registry as ``airnet_*``.

    import lib.model.backbones                      # imports this module: the names exist from then on
    model = timm.create_model("airnet_small", num_classes=10)   # or params: ``backbone: airnet_small``

After Keller Jordan's CIFAR-10 speedrun network (airbench94): no downsampling stem, a 2x2 patch-whitening
convolution, then three stages of conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU, and a
global pool. Shapes for ``airnet_small`` at 32 px: [B, 3, 32, 32] -> stem [B, 24, 31, 31] -> stages
[B, 64, 15, 15], [B, 256, 7, 7], [B, 256, 3, 3] (``forward_features``) -> pool + fc [B, num_classes]
(``forward_head``); at 28 px the maps are 27, 13, 6 and 3 px. Any input of 9 px or more works.

The whitening stem (``whiten=True``, the default) is data-initialised: on the first training-mode
forward its weights become the eigenvectors of that batch's 2x2-patch covariance scaled by
1/sqrt(eigenvalue + eps), each with its negative (so GELU keeps both signs), and are frozen from then on
(``requires_grad=False``; its bias trains). Directions with almost no variance (eigenvalue under
``rel_tol`` of the largest: grey images fed as three equal channels, JPEG noise) get zero filters rather
than amplified noise. A ``whitened`` buffer records that it happened, so saved weights, resumed runs and
``pretrained`` files skip it. Under torch.distributed the patch statistics are summed over all processes.
``whiten=False`` is a plain, trained 2x2 convolution. The network only: airbench's training tricks
(SGD-Nesterov with lookahead, label smoothing, frozen BN scales, a 1/9 logit scale, TTA) are left to
the recipe, and the kit trains it like any timm model (AdamW, one-cycle).

Like timm's CNNs the model has ``num_features``, ``forward_features``, ``forward_head(pre_logits=)``,
``get_classifier``, ``reset_classifier(num_classes, global_pool)``, ``set_grad_checkpointing`` and takes
``num_classes``, ``in_chans``, ``global_pool`` (default ``max``, as airbench), ``drop_rate`` and
``pretrained`` with ``pretrained_cfg_overlay=dict(file=path)``. Its data config says 32 px and the
CIFAR-10 mean/std; with the whitening stem the input normalisation does not matter. A recipe sets
``pool: max`` to keep airbench's pooling: the kit passes its ``pool`` (default ``avg``) to every model.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from torch import nn

__all__ = ["AirNet", "WhiteningStem", "ConvGroup"]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


class WhiteningStem(nn.Module):
    """k x k convolution without padding, then GELU: [B, in_chans, H, W] -> [B, width, H-k+1, W-k+1]."""

    def __init__(self, in_chans: int = 3, width: int = 24, kernel_size: int = 2, whiten: bool = True,
                 eps: float = 5e-4, rel_tol: float = 1e-4):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, width, kernel_size, bias=True)
        self.act = nn.GELU()
        self.eps, self.rel_tol = eps, rel_tol
        self.register_buffer("whitened", torch.tensor(not whiten))  # saved with the weights
        self._checked = not whiten
        if whiten:
            self.conv.weight.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and not self._checked:  # a Python flag: no device sync on later steps
            if not bool(self.whitened):
                self.init_whitening(x)
            self._checked = True
        return self.act(self.conv(x))

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._checked = False  # loaded weights may or may not be whitened already

    @torch.no_grad()
    def init_whitening(self, x: torch.Tensor) -> None:
        """Set the filters from the patch covariance of ``x`` ([B, in_chans, H, W], normalised images)."""
        conv = self.conv
        with torch.autocast(x.device.type, enabled=False):
            p = F.unfold(x.detach().float(), conv.kernel_size)           # [B, C*k*k, L], same order as weights
            p = p.transpose(1, 2).reshape(-1, p.shape[1]).double()       # [B*L, d]
            stats = torch.cat([p.new_tensor([p.shape[0]]), p.sum(0), (p.T @ p).flatten()])
            if dist.is_available() and dist.is_initialized():
                dist.all_reduce(stats)
            d = p.shape[1]
            n, mean = stats[0], stats[1:d + 1] / stats[0]
            cov = stats[d + 1:].view(d, d) / n - torch.outer(mean, mean)
            evals, evecs = torch.linalg.eigh(cov)                        # ascending
            evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
            filters = evecs.T / (evals + self.eps).sqrt()[:, None]       # [d, d], one direction per row
            filters[evals < self.rel_tol * evals[0]] = 0
            k = min(conv.out_channels // 2, d)
            w = torch.zeros(conv.out_channels, d, dtype=filters.dtype, device=filters.device)
            w[:k], w[k:2 * k] = filters[:k], -filters[:k]
            conv.weight.copy_(w.view_as(conv.weight))
            conv.bias.copy_(-(w @ mean))
        self.whitened.fill_(True)


class ConvGroup(nn.Module):
    """conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU: [B, cin, H, W] -> [B, cout, H//2, W//2].

    The convolutions start as kaiming-uniform with their first ``cin`` output channels the identity
    (Dirac), as in airbench."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.GELU()
        for conv in (self.conv1, self.conv2):
            w = conv.weight.data
            nn.init.dirac_(w[:min(w.shape[0], w.shape[1])])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.bn1(self.pool(self.conv1(x))))
        return self.act(self.bn2(self.conv2(x)))


class AirNet(nn.Module):
    """Whitening stem + three ``ConvGroup`` stages + global pool + linear head.

    [B, in_chans, H, W] -> ``forward_features`` [B, widths[-1], H', W'] (H' = ((H-1)//2//2)//2, 3 at
    28-32 px) -> ``forward_head`` [B, num_classes] (pooled features [B, num_features * pool's
    feat_mult] with ``pre_logits=True``). ``drop_path_rate`` exists for timm's interface only: with no
    residual branches it must stay 0.
    """

    def __init__(self, num_classes: int = 10, in_chans: int = 3, widths: tuple[int, ...] = (64, 256, 256),
                 stem_width: int = 24, stem_kernel: int = 2, whiten: bool = True, global_pool: str = "max",
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0):
        super().__init__()
        if drop_path_rate:
            raise ValueError("AirNet has no residual branches: stochastic depth (drop_path_rate) does not apply")
        self.num_classes, self.drop_rate, self.grad_checkpointing = num_classes, drop_rate, False
        self.stem = WhiteningStem(in_chans, stem_width, stem_kernel, whiten)
        chans = (stem_width, *widths)
        self.stages = nn.Sequential(*[ConvGroup(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.num_features = widths[-1]
        self.feature_info = [dict(num_chs=stem_width, reduction=1, module="stem")] + [
            dict(num_chs=c, reduction=2 ** (i + 1), module=f"stages.{i}") for i, c in enumerate(widths)]
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r"^stem", blocks=r"^stages\.(\d+)" if coarse else r"^stages\.(\d+)\.(\w+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self, name_only: bool = False):
        return "fc" if name_only else self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new ``num_classes`` head (0: none, ``forward`` returns pooled features); pool kept unless given."""
        self.num_classes = num_classes
        pool = self.global_pool.pool_type if global_pool is None else global_pool
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=pool)
        self.head_hidden_size = self.num_features * self.global_pool.feat_mult()
        self.fc.to(self.stem.conv.bias.device)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq(self.stages, x)
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs) -> dict:
    return dict(url="", num_classes=10, input_size=(3, 32, 32), pool_size=(3, 3), crop_pct=1.0,
                interpolation="bilinear", mean=CIFAR10_MEAN, std=CIFAR10_STD, first_conv="stem.conv",
                classifier="fc", license="apache-2.0", **kwargs)


default_cfgs = generate_default_cfgs({"airnet_small": _cfg(), "airnet_tiny": _cfg()})


def _create(variant: str, pretrained: bool = False, **kwargs) -> AirNet:
    return build_model_with_cfg(AirNet, variant, pretrained, feature_cfg=dict(flatten_sequential=True), **kwargs)


@register_model
def airnet_small(pretrained: bool = False, **kwargs) -> AirNet:
    """airbench94's widths 64/256/256: 1.97M parameters, forward 0.236 GFLOPs at 32 px, 0.178 at 28 px."""
    return _create("airnet_small", pretrained, **dict(dict(widths=(64, 256, 256)), **kwargs))


@register_model
def airnet_tiny(pretrained: bool = False, **kwargs) -> AirNet:
    """Widths 32/128/128, a quarter of the compute: 0.50M parameters, forward 0.066 GFLOPs at 32 px, 0.050 at
    28 px (timm's test_resnet widened to [32, 64, 64, 128]: 0.038 at 64 px)."""
    return _create("airnet_tiny", pretrained, **dict(dict(widths=(32, 128, 128)), **kwargs))
