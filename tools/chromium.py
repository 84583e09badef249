"""A headless Chromium driven over the Chrome DevTools protocol on a pipe (``--remote-debugging-pipe``:
no port, no websocket library), for the report's browser test and its docs screenshot.

  with chromium.Browser() as b:           # raises Missing when no Chromium is installed
    page = b.open('file:///.../report.html', offline=True)
    page.evaluate('document.title'); page.click('th[data-key="psnr"]'); page.screenshot()

Every wait is bounded (``timeout`` seconds); the browser process is killed on exit whatever happens.
Requests the page makes are kept (``page.requests``) so a test can check it fetched nothing from the
network. Debian's package: ``apt-get install -y chromium`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from typing import Any, Optional

FLAGS = (
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
  '--remote-debugging-pipe',
)
INSTALL = 'apt-get install -y chromium'


class Missing(RuntimeError):
  """No Chromium binary on PATH."""


def binary() -> Optional[str]:
  for name in ('chromium', 'chromium-browser', 'google-chrome', 'chrome'):
    path = shutil.which(name)
    if path:
      return path
  return None


class Browser:
  """One headless Chromium process and its DevTools pipe."""

  def __init__(self, timeout: float = 60.0, width: int = 1280, height: int = 900):
    self.timeout, self.size = timeout, (width, height)
    self.proc: Optional[subprocess.Popen] = None
    self._next_id, self._buf, self.events = 0, b'', []

  def __enter__(self) -> 'Browser':
    exe = binary()
    if exe is None:
      raise Missing(f'no Chromium on PATH ({INSTALL})')
    self._dir = tempfile.TemporaryDirectory(prefix='pmsfc-chromium-')
    to_child, self._write = os.pipe()
    self._read, from_child = os.pipe()
    # The protocol's fixed descriptors (the browser reads 3, writes 4), set by the shell that execs it
    # (bash: dash refuses descriptors above 9); no preexec_fn, so no Python-level fork in a process that
    # runs JAX's threads. The pipe ends are duplicated above 9 so the redirections cannot clobber them.
    low = (to_child, from_child)
    to_child, from_child = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in low)
    self.proc = subprocess.Popen(
      [
        'bash',
        '-c',
        f'exec "$@" 3<&{to_child} 4>&{from_child}',
        'bash',
        exe,
        *FLAGS,
        f'--user-data-dir={self._dir.name}',
        'about:blank',
      ],
      stdin=subprocess.DEVNULL,
      stdout=subprocess.DEVNULL,
      stderr=subprocess.DEVNULL,
      pass_fds=(to_child, from_child),
    )
    for fd in (to_child, from_child, *low):
      os.close(fd)
    return self

  def __exit__(self, *exc) -> None:
    try:
      if self.proc is not None and self.proc.poll() is None:
        try:
          self.send('Browser.close', timeout=5)
        except Exception:  # pylint: disable=broad-except
          pass
        try:
          self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
          pass
    finally:
      if self.proc is not None and self.proc.poll() is None:
        self.proc.kill()
        self.proc.wait(timeout=10)
      for fd in (self._write, self._read):
        try:
          os.close(fd)
        except OSError:
          pass
      self._dir.cleanup()

  def _message(self, deadline: float) -> dict:
    while b'\0' not in self._buf:
      left = deadline - time.monotonic()
      if left <= 0:
        raise TimeoutError('no answer from Chromium in time')
      if not select.select([self._read], [], [], min(left, 1.0))[0]:
        continue
      chunk = os.read(self._read, 1 << 20)
      if not chunk:
        raise RuntimeError('Chromium closed its DevTools pipe')
      self._buf += chunk
    msg, self._buf = self._buf.split(b'\0', 1)
    return json.loads(msg)

  def send(
    self,
    method: str,
    params: Optional[dict] = None,
    session: Optional[str] = None,
    timeout: Optional[float] = None,
  ) -> dict:
    """A DevTools command's result (events that arrive meanwhile go to ``events``)."""
    self._next_id += 1
    msg = {'id': self._next_id, 'method': method, 'params': params or {}}
    if session:
      msg['sessionId'] = session
    os.write(self._write, json.dumps(msg).encode() + b'\0')
    deadline = time.monotonic() + (timeout or self.timeout)
    while True:
      reply = self._message(deadline)
      if reply.get('id') == self._next_id:
        if 'error' in reply:
          raise RuntimeError(f'{method}: {reply["error"]}')
        return reply.get('result', {})
      self.events.append(reply)

  def wait_event(self, method: str, session: str, timeout: Optional[float] = None) -> dict:
    deadline = time.monotonic() + (timeout or self.timeout)
    while True:
      for i, e in enumerate(self.events):
        if e.get('method') == method and e.get('sessionId') == session:
          return self.events.pop(i)
      self.events.append(self._message(deadline))

  def open(self, url: str, offline: bool = True) -> 'Page':
    """A new tab showing ``url`` once loaded (with ``offline``, network emulated as cut)."""
    target = self.send('Target.createTarget', {'url': 'about:blank'})['targetId']
    session = self.send('Target.attachToTarget', {'targetId': target, 'flatten': True})['sessionId']
    page = Page(self, session)
    page.send('Network.enable')
    if offline:
      page.send(
        'Network.emulateNetworkConditions',
        {'offline': True, 'latency': 0, 'downloadThroughput': -1, 'uploadThroughput': -1},
      )
    w, h = self.size
    page.send(
      'Emulation.setDeviceMetricsOverride', {'width': w, 'height': h, 'deviceScaleFactor': 1, 'mobile': False}
    )
    page.send('Page.enable')
    page.send('Page.navigate', {'url': url})
    self.wait_event('Page.loadEventFired', session)
    return page


class Page:
  """One tab (a flat DevTools session)."""

  def __init__(self, browser: Browser, session: str):
    self.browser, self.session = browser, session

  def send(self, method: str, params: Optional[dict] = None) -> dict:
    return self.browser.send(method, params, self.session)

  @property
  def requests(self) -> list[str]:
    """URLs of every request the page has made so far."""
    return [
      e['params']['request']['url']
      for e in self.browser.events
      if e.get('method') == 'Network.requestWillBeSent' and e.get('sessionId') == self.session
    ]

  def evaluate(self, expression: str) -> Any:
    """The JSON value of a JavaScript expression in the page."""
    r = self.send('Runtime.evaluate', {'expression': expression, 'returnByValue': True, 'awaitPromise': True})
    if 'exceptionDetails' in r:
      raise RuntimeError(f'{expression}: {r["exceptionDetails"]}')
    return r['result'].get('value')

  def wait_for(self, expression: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
      value = self.evaluate(expression)
      if value:
        return value
      if time.monotonic() > deadline:
        raise TimeoutError(f'{expression} stayed false for {timeout} s')
      time.sleep(0.1)

  def click(self, selector: str) -> None:
    """A real mouse click (press and release) at the centre of the first element matching ``selector``."""
    box = self.evaluate(
      f'(function(){{var e=document.querySelector({json.dumps(selector)}); e.scrollIntoView({{block:"center"}});'
      'var r=e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2];})()'
    )
    for kind in ('mousePressed', 'mouseReleased'):
      self.send(
        'Input.dispatchMouseEvent',
        {'type': kind, 'x': box[0], 'y': box[1], 'button': 'left', 'clickCount': 1},
      )

  def screenshot(self) -> bytes:
    """PNG of the viewport."""
    return base64.b64decode(self.send('Page.captureScreenshot', {'format': 'png'})['data'])
