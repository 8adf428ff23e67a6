"""Hand-made table of the token each chat template's model emits to stop an assistant turn (issue #18).

Written by reading every template in ../shared/templates/{axolotl,chujiezheng,trl} (inference variants; the
`*_training.jinja` files are a second reference, see agentic_oracle.trl_spans) and the tokenizers' own templates,
independently of sftprep's marker detection. Keys are "<family>/<stem>" ("own/<tokenizer>" for a tokenizer's
own template). "{eos}" stands for the tokenizer's eos_token where the template renders `eos_token`.

- `plain`: markers ending a turn without tool calls; `tool`: with tool calls (None: the same as `plain`).
- `next_header`: the template renders no end marker; a turn is ended by the next message's header, whose
  special token the model emits to stop: `next_header[role of the next message]`, or at the end of the
  conversation `after_plain` / `after_tool` (what the engine stops on at inference: GLM-4 stops on <|user|> after
  a reply and on <|observation|> after a tool call, and TRL's glm4moe_training trains exactly that).
  `end_of_conversation`: text such a template renders only after the last message (metharme's eos_token).
- Neither markers nor headers (`Stop()`): the template ends a turn with plain text only (llava, amberchat, ...);
  the turn is what the template renders for it in the middle of a conversation (see agentic_oracle).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Stop:
    plain: tuple[str, ...] = ()
    tool: tuple[str, ...] | None = None
    next_header: Mapping[str, str] = field(default_factory=dict)
    after_plain: str = ""
    after_tool: str = ""
    end_of_conversation: str = ""  # text rendered only after the last message (not part of a turn)

    def markers(self, tool_turn: bool, eos: str | None) -> tuple[str, ...]:
        raw = self.tool if tool_turn and self.tool is not None else self.plain
        return tuple((eos or "") if m == "{eos}" else m for m in raw if m != "{eos}" or eos)

    def header(self, next_role: str | None, tool_turn: bool) -> str:
        if next_role is not None:
            return self.next_header.get(next_role, "")
        return self.after_tool if tool_turn else self.after_plain


IM_END = Stop(("<|im_end|>",))
EOT_ID = Stop(("<|eot_id|>",))
PHI_END = Stop(("<|end|>",))
EOS = Stop(("{eos}",))
GEMMA = Stop(("<end_of_turn>",))
COHERE = Stop(("<|END_OF_TURN_TOKEN|>",))  # Command A / Cohere 2: after <|END_RESPONSE|> or <|END_ACTION|>
GEMMA4 = Stop(("<turn|>",), tool=("<|tool_response>",))  # a call ends by asking for the response
DEEPSEEK = Stop(("<｜end▁of▁sentence｜>",))  # tool calls: <｜tool▁calls▁end｜><｜end▁of▁sentence｜>
NO_MARKER = Stop()
GLM4 = Stop(
    next_header={"user": "<|user|>", "tool": "<|observation|>", "system": "<|system|>"},
    after_plain="<|user|>",
    after_tool="<|observation|>",
)
# eos_token only at the very end of a conversation (not part of a turn): replies are ended by the next <|user|>
METHARME = Stop(
    next_header={"user": "<|user|>"}, after_plain="<|user|>", after_tool="<|user|>", end_of_conversation="{eos}"
)

STOPS: dict[str, Stop] = {
    # axolotl-ai-cloud/axolotl
    "axolotl/alpaca": EOS,
    "axolotl/aya": COHERE,
    "axolotl/chatml": IM_END,
    "axolotl/cohere": COHERE,
    "axolotl/command_a": COHERE,
    "axolotl/command_a_rag": COHERE,
    "axolotl/command_a_tool_use": COHERE,
    "axolotl/deepseek_v2": EOS,
    "axolotl/deepseek_v3": DEEPSEEK,
    "axolotl/exaone": Stop(("[|endofturn|]",)),
    "axolotl/exaone4": Stop(("[|endofturn|]",)),
    "axolotl/falcon_h1": IM_END,
    "axolotl/gemma": GEMMA,
    "axolotl/gemma3": GEMMA,
    "axolotl/gemma3n": GEMMA,
    "axolotl/gemma4": GEMMA4,
    "axolotl/gemma4_unified": GEMMA4,
    "axolotl/jamba": Stop(("<|eom|>",)),
    "axolotl/llama3": EOT_ID,
    "axolotl/llama3_2_vision": EOT_ID,
    "axolotl/llama4": Stop(("<|eot|>",)),
    "axolotl/llava": NO_MARKER,  # "ASSISTANT: text " then the next "USER: "
    "axolotl/metharme": METHARME,
    "axolotl/mistral_v1": EOS,
    "axolotl/mistral_v2v3": EOS,  # also after [TOOL_CALLS] [...]
    "axolotl/mistral_v3_tekken": EOS,
    "axolotl/mistral_v7_tekken": EOS,
    "axolotl/nemotron_h": IM_END,
    "axolotl/phi_3": PHI_END,
    "axolotl/phi_35": PHI_END,
    "axolotl/phi_4": IM_END,
    "axolotl/pixtral": EOS,
    "axolotl/qwen2_vl": IM_END,
    "axolotl/qwen3": IM_END,
    "axolotl/qwen3_5": IM_END,
    "axolotl/qwen_25": IM_END,
    # chujiezheng/chat_templates (indented for reading: most do not render prefix-consistently)
    "chujiezheng/alpaca": EOS,
    "chujiezheng/amberchat": NO_MARKER,
    "chujiezheng/chatml": IM_END,
    "chujiezheng/chatqa": NO_MARKER,
    "chujiezheng/falcon-instruct": NO_MARKER,
    "chujiezheng/gemma-it": GEMMA,
    "chujiezheng/granite-3.0-instruct": Stop(("<|end_of_text|>",)),
    "chujiezheng/llama-2-chat": EOS,
    "chujiezheng/llama-3-instruct": EOT_ID,
    "chujiezheng/mistral-instruct": EOS,
    "chujiezheng/openchat-3.5": Stop(("<|end_of_turn|>",)),
    "chujiezheng/phi-3-small": PHI_END,
    "chujiezheng/phi-3": PHI_END,
    "chujiezheng/qwen2.5-instruct": IM_END,
    "chujiezheng/saiga": EOS,
    "chujiezheng/solar-instruct": NO_MARKER,
    "chujiezheng/vicuna": EOS,
    "chujiezheng/zephyr": EOS,
    # trl 1.16 chat_templates (inference variants)
    "trl/cohere": COHERE,
    "trl/cohere2": COHERE,
    "trl/deepseek_r1_distill": DEEPSEEK,
    "trl/deepseekv3": DEEPSEEK,
    "trl/diffusion_gemma": GEMMA4,
    "trl/gemma3": GEMMA,
    "trl/gemma4": GEMMA4,
    "trl/gemma4_v2": Stop(("<turn|>",)),  # tool calls end the turn; results come in a `tool` turn
    "trl/gemma4_v4": GEMMA4,
    "trl/gemma4_v5": GEMMA4,
    "trl/glm4moe": GLM4,
    "trl/idefics3": Stop(("<end_of_utterance>",)),
    "trl/lfm2": IM_END,
    "trl/lfm2_2_5_v2": IM_END,
    "trl/lfm2_2_5_vl": IM_END,
    "trl/lfm2_v2": IM_END,
    "trl/llama3": EOT_ID,
    "trl/llava_next": Stop(("</s>",)),  # " text</s> " (string contents raise: it reads content parts)
    "trl/nemotron_3_5_lightning": IM_END,
    "trl/nemotron_3_super": IM_END,
    "trl/nemotron_3_ultra": IM_END,
    "trl/phi3": PHI_END,  # eos_token is appended only at the end of a conversation: not part of a turn
    "trl/qwen2_5_vl": IM_END,
    "trl/qwen3": IM_END,
    "trl/qwen3_5_nothink": IM_END,
    "trl/qwen3_6": IM_END,
    "trl/qwen3_8": IM_END,
    "trl/qwen3_instruct_2507": IM_END,
    "trl/qwen3_vl": IM_END,
    "trl/smolvlm": Stop(("<end_of_utterance>",)),
    # the tokenizers' own templates (../shared/tokenizers/<name>/tokenizer_config.json)
    "own/qwen2.5": IM_END,
    "own/llama3": EOT_ID,
    "own/phi-3-mini": PHI_END,  # eos appended at the end of a conversation, as trl/phi3
    "own/minimind": IM_END,
}


def template_key(template: str | Path) -> str:
    """ "trl/qwen3" for .../templates/trl/qwen3.jinja; "own/qwen2.5" for a tokenizer directory or its config."""
    p = Path(template)
    if p.name == "tokenizer_config.json":
        p = p.parent
    if p.suffix == ".jinja":
        return f"{p.parent.name}/{p.stem}"
    return f"own/{p.name}"


def stop_for(template: str | Path) -> Stop:
    key = template_key(template)
    if key not in STOPS:
        raise KeyError(f"no hand-made stop entry for {key}: read the template and add one to tests/agentic_stops.py")
    return STOPS[key]
