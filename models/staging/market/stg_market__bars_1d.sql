{{ gated_bars('bars_1d', '1d') }}
