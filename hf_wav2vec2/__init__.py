"""hf_wav2vec2: wav2vec 2.0 from scratch, at home in the Hugging Face ecosystem.

Importing the package registers the classes with the transformers Auto classes (model_type ``w2v2``).
"""

from transformers import AutoConfig, AutoModel, AutoModelForCTC, AutoModelForPreTraining

from .configuration import W2V2Config
from .frames import num_frames
from .loading import check_model_path
from .modeling import W2V2ForCTC, W2V2ForPreTraining, W2V2Model, W2V2PreTrainedModel
from .outputs import W2V2BaseModelOutput, W2V2CTCOutput, W2V2ForPreTrainingOutput

AutoConfig.register(W2V2Config.model_type, W2V2Config, exist_ok=True)
AutoModel.register(W2V2Config, W2V2Model, exist_ok=True)
AutoModelForPreTraining.register(W2V2Config, W2V2ForPreTraining, exist_ok=True)
AutoModelForCTC.register(W2V2Config, W2V2ForCTC, exist_ok=True)
# save_pretrained (and so Trainer checkpoints and Hub pushes) then writes auto_map and copies our code beside
# config.json, so the folder loads with trust_remote_code where hf_wav2vec2 is not installed.
W2V2Config.register_for_auto_class()
W2V2Model.register_for_auto_class("AutoModel")
W2V2ForPreTraining.register_for_auto_class("AutoModelForPreTraining")
W2V2ForCTC.register_for_auto_class("AutoModelForCTC")

__all__ = [
    "W2V2BaseModelOutput", "W2V2CTCOutput", "W2V2Config", "W2V2ForCTC", "W2V2ForPreTraining",
    "W2V2ForPreTrainingOutput", "W2V2Model", "W2V2PreTrainedModel", "check_model_path", "num_frames",
]
__version__ = "0.1.0"
