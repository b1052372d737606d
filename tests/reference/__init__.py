"""The official implementations lmlab's metrics are checked against, copied or followed line by line."""
