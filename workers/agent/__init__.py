"""The coding agent: a small loop that drives a model through tool calls run in the sandbox."""

from workers.agent.loop import (
    AgentLimits,
    AgentResult,
    Environment,
    ExecLike,
    LimitsExceeded,
    Submitted,
    TooManyFormatErrors,
    run_agent,
)
from workers.agent.model import Model, ModelError, ModelReply, OpenAIModel, ToolCall, Usage
from workers.agent.text import AgentTask, strip_hidden_text
from workers.agent.tools import TOOLS, FormatError
from workers.agent.trajectory import Trajectory

__all__ = [
    "TOOLS",
    "AgentLimits",
    "AgentResult",
    "AgentTask",
    "Environment",
    "ExecLike",
    "FormatError",
    "LimitsExceeded",
    "Model",
    "ModelError",
    "ModelReply",
    "OpenAIModel",
    "Submitted",
    "TooManyFormatErrors",
    "ToolCall",
    "Trajectory",
    "Usage",
    "run_agent",
    "strip_hidden_text",
]
