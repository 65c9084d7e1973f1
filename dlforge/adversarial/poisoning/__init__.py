"""Data poisoning: attacks on the training set, defences that find the poisons, and the run that
measures both on the deployed engines."""
