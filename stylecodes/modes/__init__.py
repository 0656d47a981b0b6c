"""Style modes: every way of styling a picture, behind one seam (`base.StyleMode`).

- `stylecode`: the published method, a 20-value code through the control module (`stylecode.StylecodeMode`).
- `deadiff`: DEADiff's style tokens in the UNet's style layers (`deadiff.DEADiffMode`; opt-in, see its licence).
"""

from stylecodes.modes.base import BatchContext, StepConditioning, StyleInput, StyleMode
from stylecodes.modes.deadiff import DEADiffMode
from stylecodes.modes.stylecode import StylecodeMode

__all__ = ["BatchContext", "DEADiffMode", "StepConditioning", "StyleInput", "StyleMode", "StylecodeMode"]
