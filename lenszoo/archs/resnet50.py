"""ResNet-50 (He et al. 2016) from timm: the non-equivariant baseline of the seed paper."""

from ..hookspecs import hookimpl
from ..tasks import num_outputs


def build_resnet50(task, **kwargs):
    import timm  # imported here: timm costs ~4 s and only this architecture needs it

    return timm.create_model("resnet50", pretrained=False, in_chans=1, num_classes=num_outputs(task), **kwargs)


@hookimpl
def register_architectures(register):
    register(
        "resnet50",
        build_resnet50,
        tasks=("classify", "regress"),
        description="timm ResNet-50, one input channel, global average pooling; not rotation-equivariant",
        paper="He et al. 2016, arXiv:1512.03385",
        parameters={"classify": 23_507_907, "regress": 23_503_809},  # a test checks them
        role="baseline", order=0,
    )
