"""The coding agent: a small loop that drives a model through tool calls run in the sandbox."""

from workers.agent.loop import (
    AgentLimits,
    AgentResult,
    Environment,
    ExecLike,
    LimitsExceeded,
    ModelFailed,
    RunEnded,
    Stopped,
    Stuck,
    Submitted,
    TooManyFormatErrors,
    run_agent,
)
from workers.agent.model import Model, ModelError, ModelReply, OpenAIModel, ToolCall, Usage
from workers.agent.text import (
    AgentTask,
    Comment,
    Discussion,
    SteeringComment,
    strip_hidden_text,
)
from workers.agent.tools import ASK_TOOLS, TOOLS, FormatError
from workers.agent.trajectory import Trajectory

__all__ = [
    "ASK_TOOLS",
    "TOOLS",
    "AgentLimits",
    "AgentResult",
    "AgentTask",
    "Comment",
    "Discussion",
    "Environment",
    "ExecLike",
    "FormatError",
    "LimitsExceeded",
    "Model",
    "ModelError",
    "ModelFailed",
    "ModelReply",
    "OpenAIModel",
    "RunEnded",
    "SteeringComment",
    "Stopped",
    "Stuck",
    "Submitted",
    "TooManyFormatErrors",
    "ToolCall",
    "Trajectory",
    "Usage",
    "run_agent",
    "strip_hidden_text",
]
