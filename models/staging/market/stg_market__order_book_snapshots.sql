-- Top of book and five-level depth totals per snapshot.
select
    instrument_id,
    snapshot_at,
    bid_prices[1] as best_bid,
    ask_prices[1] as best_ask,
    bid_sizes[1] + bid_sizes[2] + bid_sizes[3] + bid_sizes[4] + bid_sizes[5] as bid_size,
    ask_sizes[1] + ask_sizes[2] + ask_sizes[3] + ask_sizes[4] + ask_sizes[5] as ask_size
from {{ source('market', 'order_book_snapshots') }}
