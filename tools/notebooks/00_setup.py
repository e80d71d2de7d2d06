"""Generate notebooks/00_setup.ipynb."""

from nbgen import code, md, params, write

cells = [
    md("""
# 00 · Setup: your machine, the package and the configuration

Check that everything is installed and which device (GPU or CPU) will train the networks, then meet the one
configuration object that drives every later notebook.

**You will learn**
- how to check versions and the compute device (CUDA when usable, otherwise the CPU, with no error);
- what the three profiles `smoke`, `workshop` and `full` are for;
- how the configuration tree is organised and saved as JSON;
- how the widgets edit the same configuration object.

Prerequisites: none. This is the first notebook of the series.
"""),
    md("""
## Setup
On Colab, uncomment the first line to install the package (torch is already there, so it is not reinstalled).
"""),
    code("""
# !pip install -q "deepssm-nb @ git+https://github.com/deepssm-nb/deepssm-nb"   # Colab only
import deepssm_nb
from deepssm_nb.widgets import config_panel

deepssm_nb.print_config()
"""),
    md("""
## Parameters
Every knob of this notebook is in the next cell. `profile` picks the preset sizes; `work_dir` is where all outputs
of the series go; `data_dir` is where the femur cohort is cached (`None`: `$DEEPSSM_DATA_DIR` or `~/.cache/deepssm_nb`).
"""),
    params("""
profile = 'workshop'   # 'smoke' (seconds), 'workshop' (CPU laptop, ~20 min series), 'full' (GPU)
work_dir = '../deepssm_output'
data_dir = None
"""),
    code("""
cfg = deepssm_nb.notebook_config(profile, work_dir, data_dir)
"""),
    md("""
## The compute device
`get_device('auto')` launches a tiny kernel on the GPU to be sure it really works (a GPU whose driver or wheel does
not match would otherwise fail later, in the middle of training). Without a usable GPU you get the CPU and a
one-line warning: nothing stops.
"""),
    code("""
device = deepssm_nb.get_device(cfg.deepssm.trainer.device)
device
"""),
    md("""
## One configuration for the whole pipeline
`cfg` holds the cohort (`data`), grooming (`groom`), augmentation (`augment`), loaders (`loader`) and the DeepSSM
network and training (`deepssm`, with the keys of the DeepSSM JSON config file). Each stage writes to its own folder.
"""),
    code("""
for stage, folder in cfg.resolved_paths().items():
    print(f'{stage:>13}: {folder}')
"""),
    md("""
## Profiles side by side
The three presets differ only in sizes: number of particles, voxel size, generated samples, epochs.
"""),
    code("""
deepssm_nb.config.profile_table()
"""),
    md("""
## Save and reload the configuration
The JSON file is what you would keep with a trained model; invalid files are rejected with every problem listed.
"""),
    code("""
path = deepssm_nb.save_config(cfg, f'{work_dir}/config.json')
assert deepssm_nb.load_config(path) == cfg
print(path.read_text()[:400], '...')
"""),
    md("""
## Widgets are a view over the configuration
Change a value below and `cfg` changes with it; an invalid value is refused with a message. Nothing here runs
anything expensive.
"""),
    code("""
config_panel(cfg, sections=('augment', 'loader', 'deepssm.trainer'))
"""),
    md("""
## Summary
- `print_config()` and `get_device()` tell you what will run where; a CPU is fine for the `workshop` profile.
- One `Config` object drives every notebook; profiles only change sizes.
- The configuration saves to JSON and is validated, with every problem reported at once.

## Exercises
1. Load a config with a typo, e.g. `{"augment": {"sampler": "KDE"}}`, with `deepssm_nb.Config.from_dict`: what
   does the error suggest?
2. Switch the widget's profile to `full` and look at how `cfg.augment.num_samples` changed.

## Next
[01 · The femur cohort](01_femur_data.ipynb): build the offline femur cohort and look at its images and particles.
"""),
]

write('00_setup', cells)
