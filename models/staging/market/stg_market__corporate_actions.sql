select
    instrument_id,
    ex_at,
    action,
    split_ratio,
    dividend_amount
from {{ source('market', 'corporate_actions') }}
