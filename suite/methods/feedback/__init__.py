"""The feedback-alignment family: `fa`, `dfa`, `bdfa`, `hybrid-dfa` (docs/feedback-alignment.md)."""

from suite.methods.feedback.dfa import BDFA, DFA
from suite.methods.feedback.fa import FA
from suite.methods.feedback.hybrid import HybridDFA

__all__ = ["BDFA", "DFA", "FA", "FEEDBACK_METHODS", "HybridDFA"]

FEEDBACK_METHODS = {cls.name: cls for cls in (FA, DFA, BDFA, HybridDFA)}
