"""``hf-cache demo``: the whole pipeline on one machine (``command``) and the tiny model it publishes."""
