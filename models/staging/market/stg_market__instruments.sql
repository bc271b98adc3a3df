select
    instrument_id,
    exchange,
    symbol,
    exchange || ':' || symbol as instrument_key,
    is_synthetic
from {{ source('market', 'instruments') }}
