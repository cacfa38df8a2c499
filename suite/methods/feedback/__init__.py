"""The feedback-alignment family: `fa`, `dfa`, `bdfa`, `hybrid-dfa` and the sign-symmetric
`usf`, `brsf`, `frsf` (docs/feedback-alignment.md)."""

from suite.methods.feedback.dfa import BDFA, DFA
from suite.methods.feedback.fa import FA
from suite.methods.feedback.hybrid import HybridDFA
from suite.methods.feedback.sign_symmetry import BRSF, FRSF, USF

__all__ = ["BDFA", "BRSF", "DFA", "FA", "FEEDBACK_METHODS", "FRSF", "HybridDFA", "USF"]

FEEDBACK_METHODS = {cls.name: cls for cls in (FA, DFA, BDFA, HybridDFA, USF, BRSF, FRSF)}
