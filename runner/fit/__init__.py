"""What fit() gets: the datasets' splits, the network, optimiser and loss, BiT-HyperRule's
schedule, and the callbacks that log, checkpoint, back up and stop."""
