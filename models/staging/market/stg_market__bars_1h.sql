{{ gated_bars('bars_1h', '1h') }}
