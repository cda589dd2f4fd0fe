"""Hot ops: MoE routing, the grouped expert FFN and attention.

Torch implementations are the reference and the CPU path.
"""
