"""Language models, one module (or package) per family.

Nothing heavy is imported here, so ``import lmlab.models`` stays instant; import
the family you need, e.g. ``from lmlab.models.transformer import shape,
build_transformer``.
"""
