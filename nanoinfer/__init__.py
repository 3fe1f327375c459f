"""nanoinfer: a compact LLM inference engine for learning how modern engines get their speed."""

from nanoinfer.config import EngineConfig
from nanoinfer.llm import LLM, CompletionOutput, RequestOutput
from nanoinfer.sampling_params import SamplingParams
from nanoinfer.workbook.registry import use_exercises

__all__ = ["LLM", "SamplingParams", "EngineConfig", "RequestOutput", "CompletionOutput", "use_exercises"]
__version__ = "0.1.0"
