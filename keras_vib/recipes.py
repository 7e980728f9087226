"""The training recipes of `keras-vib train`, by model and dataset.

A recipe is a dict of the settings of a run (epochs, batch size, learning
rate and schedule, KL factor, warm-up, fine-tuning, augmentation, the guard
on the validation error); each can be overridden on the command line. The
networks themselves, and their per-layer KL multipliers, are in
`keras_vib.models`.

Example:

>>> from keras_vib.recipes import RECIPES
>>> RECIPES[("lenet5", "mnist")]["epochs"]
25
"""

__all__ = ["GENERIC_RECIPE", "RECIPES"]

# The recipe of any (model, dataset) pair RECIPES does not name. Its KL
# factor was tuned on no data, so a guard watches the error on training
# examples held out: when it rises `max_error_increase` points over its best,
# the units closed since reopen and the KL pressure eases, and the third such
# rise stops pruning (keras_vib.VIBGuard; 0 switches the guard off). Then 5
# epochs fine-tune the slim model.
GENERIC_RECIPE = dict(
    epochs=20,
    batch_size=100,
    learning_rate=1e-3,
    lr_schedule="constant",
    lr_step_epochs=30,
    lr_step_factor=0.5,
    kl_factor=1e-4,
    pretrain_epochs=0,
    warmup_epochs=2,
    augment=False,
    finetune_epochs=5,
    finetune_lr=1e-3,
    max_error_increase=1.0,
)
# The tuned recipes were measured without the guard (and on the whole
# training split).
_STEP = dict(GENERIC_RECIPE, lr_schedule="step", max_error_increase=0.0)
# Both MNIST recipes: one-pixel random shifts in the VIB and the fine-tuning
# epochs, then fine-tuning of the slim model.
_MNIST = dict(_STEP, augment=True)
# The recipes `keras-vib train` uses by default, by (model, dataset).
RECIPES = {
    # KL ramped up over 20 epochs, then 80 more with the learning rate halved
    # every 25: the slow ramp keeps more useful input pixels than a fast one.
    # Then 60 epochs fine-tune the slim model from a learning rate of 3e-3
    # (without the shifts the slim net overfits its ~100 input pixels; with
    # them it underfits, and trains on).
    ("lenet300", "mnist"): dict(
        _MNIST,
        epochs=100,
        lr_step_epochs=25,
        kl_factor=1.4e-3,
        warmup_epochs=20,
        finetune_epochs=60,
        finetune_lr=3e-3,
    ),
    # Per-layer KL multipliers in keras_vib.models.LENET5_KL_MULTIPLIERS; 25
    # VIB epochs settle the structure, then 30 epochs fine-tune the slim
    # model from a learning rate of 2e-3.
    ("lenet5", "mnist"): dict(
        _MNIST,
        epochs=25,
        lr_step_epochs=10,
        kl_factor=2.5e-5,
        warmup_epochs=5,
        finetune_epochs=30,
        finetune_lr=2e-3,
    ),
    # The small ViT of keras_vib.models.vit: 8 epochs (cosine), the KL
    # warmed up over 2, then 4 epochs fine-tune the slim model from 5e-4;
    # as benchmarks/vit_mnist.py trains it (with --target-flops there).
    ("vit", "mnist"): dict(
        _MNIST,
        epochs=8,
        lr_schedule="cosine",
        kl_factor=1e-4,
        warmup_epochs=2,
        finetune_epochs=4,
        finetune_lr=5e-4,
    ),
    # The paper's VGG schedule: 300 epochs, the learning rate halved every 30.
    ("vgg16", "cifar10"): dict(
        _STEP, epochs=300, batch_size=128, kl_factor=1e-5, warmup_epochs=5
    ),
    ("vgg16", "cifar100"): dict(
        _STEP, epochs=300, batch_size=128, kl_factor=2e-5, warmup_epochs=5
    ),
}
