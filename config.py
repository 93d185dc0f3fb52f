"""Your replacement configurations: one dict per bottleneck in network order (16 for ResNet-50).

Each dict maps branch names to widths that sum to the block width (64, 128, 256, 512 per layer).
Add a searched network by pasting the list that `--prune` printed (and wrote to conv_config.txt)
under a new key, then train it with `--op_code OP --conv_config KEY`.

The six released configs (CAKES12D_P, CAKES12D_C, CAKES23D_P, CAKES23D_C, CAKES123D_P, CAKES123D_C) ship
inside the package (cakes/configs.py) and work without this file; a key here is added to them, or replaces
the released config of that name.
"""

conv_configs = {
    # 'MY_SEARCH': [{'kxkxk': 28, '1xkxk': 35, 'kx1x1': 1}, ...],
}
