"""The model registry: name -> (model class, config dataclass). Names are the CLI's choices;
the order is the order of tables and legends (JUMP first). docs/architecture.md says how to
add a model."""
from jumpbench.models.cdna import CDNA, CDNAConfig
from jumpbench.models.gqn import GQN, GQNConfig
from jumpbench.models.jump import JUMP, JUMPConfig
from jumpbench.models.sssm import SSSM, SSSMConfig
from jumpbench.models.sv2p import SV2P, SV2PConfig

MODELS: dict = {
    "jump": (JUMP, JUMPConfig),
    "gqn": (GQN, GQNConfig),
    "sssm": (SSSM, SSSMConfig),
    "sv2p": (SV2P, SV2PConfig),
    "cdna": (CDNA, CDNAConfig),
}
