"""Model cards, one TOML file per network, installed as ``synthdb.model_cards``; see synthdb.nets.cards."""
