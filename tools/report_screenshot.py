r"""Screenshot of a batch job's report in headless Chromium (docs/report.png).

  python -m tools.report_screenshot --output_dir=OUT --png=docs/report.png [--width=1280 --height=900]

OUT is a finished ``launch.invert`` folder (its ``report.html``); the page opens with the network cut.
"""

import pathlib

from absl import app
from absl import flags

from tools import chromium

_OUT = flags.DEFINE_string('output_dir', None, 'A launch.invert output folder.', required=True)
_PNG = flags.DEFINE_string('png', 'docs/report.png', 'Where to write the screenshot.')
_W = flags.DEFINE_integer('width', 1280, 'Viewport width.')
_H = flags.DEFINE_integer('height', 900, 'Viewport height.')


def main(argv):
  del argv
  with chromium.Browser(width=_W.value, height=_H.value) as b:
    page = b.open((pathlib.Path(_OUT.value).resolve() / 'report.html').as_uri(), offline=True)
    page.wait_for('document.body.dataset.ready === "true"')
    page.wait_for('Array.from(document.images).every(i => i.complete)')
    pathlib.Path(_PNG.value).write_bytes(page.screenshot())
  print(f'wrote {_PNG.value}')


if __name__ == '__main__':
  app.run(main)
