"""The feedback-alignment experiments, for the registry in suite/experiments/__init__.py."""

from suite.experiments import biotorch_resnet, dfa_cnn, launay_bottleneck

FEEDBACK_EXPERIMENTS = {e.name: e for e in (dfa_cnn.EXPERIMENT, biotorch_resnet.EXPERIMENT, launay_bottleneck.EXPERIMENT)}
