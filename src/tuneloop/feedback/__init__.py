"""The feedback loop: users' feedback from the serve store becomes training data, a retrained model is gated
against the one in service, and a passing model is promoted."""
