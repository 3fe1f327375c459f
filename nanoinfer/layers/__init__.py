"""Building blocks of the decoder models: parallel linears, norms, rotary, attention, sampling."""
