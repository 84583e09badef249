"""The refill loop's slot checkpoints (jobs/invert/batch_state.check_slots): one process's slots, and the
global mesh's (every process's slots in one checkpoint, each process resuming its own); no pod needed."""

import pytest
from etils import epath

from pmsfc_jax.jobs import multihost
from pmsfc_jax.jobs.invert import batch_state

FP, SIZE = 'fp0', 16


def _check(names, process=None, share=('a', 'b', 'c', 'd'), **meta):
  """check_slots of a checkpoint of ``names`` (``meta``: other saved fields, under a valid digest) in a run
  with a batch shape of 4."""
  m = dict(batch_state.batch_meta(names, 4, FP, SIZE), **meta)
  m['digest'] = batch_state._digest(m)
  return batch_state.check_slots(m, FP, SIZE, 4, list(share), process=process)


def test_one_process_resumes_its_slots():
  assert _check(['a', '', 'c', '']) == ['a', '', 'c', '']
  with pytest.raises(batch_state.Unusable, match='do not match the current batch shape 4'):
    _check(['a', ''])
  with pytest.raises(batch_state.Unusable, match="1 of its images are not in this process's share"):
    _check(['a', 'x', '', ''])


def test_each_process_resumes_its_own_slots_of_the_global_checkpoint():
  names = [['a', ''], ['b', 'c']]  # process 0's slots, then process 1's
  assert _check(names, (0, 2), share=('a', 'd')) == ['a', '']
  assert _check(names, (1, 2), share=('b', 'c')) == ['b', 'c']
  # The same check made by the BatchCheckpoint of a lockstep process, on the metadata it writes.
  ckpt = batch_state.BatchCheckpoint(epath.Path('/nonexistent'), multihost.Processes(1, 2, True))
  assert ckpt.check_slots(ckpt.meta(names, 4, FP, SIZE), FP, SIZE, 4, ['b', 'c']) == ['b', 'c']


@pytest.mark.parametrize(
  'names,kwargs,message',
  [
    (['a', '', 'b', 'c'], {}, 'not the checkpoint of a global batch'),  # saved by one process
    ([['a'], ['b'], ['c', 'd']], {}, 'saved by 3 processes, not 2'),
    ([['a'], ['b', 'c', '']], {}, 'do not match the current batch shape 4'),  # rows not split evenly
    ([['a', ''], ['b', 'c']], {'batch_shape': 8}, 'do not match the current batch shape 4'),
    ([['a', ''], ['a', 'c']], {}, 'names an image twice'),  # across processes
    ([['a', 'b'], ['', 'c']], {}, "1 of its images are not in this process's share"),
  ],
)
def test_a_global_checkpoint_of_another_layout_is_not_resumed(names, kwargs, message):
  with pytest.raises(batch_state.Unusable, match=message):
    _check(names, (0, 2), share=('a', 'd'), **kwargs)
