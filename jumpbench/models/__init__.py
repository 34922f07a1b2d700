"""The model registry: name -> (model class, config dataclass). Names are the CLI's choices."""
MODELS: dict = {}

from jumpbench.models.gqn import GQN, GQNConfig  # noqa: E402
from jumpbench.models.jump import JUMP, JUMPConfig  # noqa: E402

MODELS["jump"] = (JUMP, JUMPConfig)
MODELS["gqn"] = (GQN, GQNConfig)

from jumpbench.models.cdna import CDNA, CDNAConfig  # noqa: E402
from jumpbench.models.sssm import SSSM, SSSMConfig  # noqa: E402
from jumpbench.models.sv2p import SV2P, SV2PConfig  # noqa: E402

MODELS["sssm"] = (SSSM, SSSMConfig)
MODELS["sv2p"] = (SV2P, SV2PConfig)
MODELS["cdna"] = (CDNA, CDNAConfig)
