{{ gated_bars('bars_1m', '1m') }}
