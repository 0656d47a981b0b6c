"""Style modes: every way of styling a picture, behind one seam (`base.StyleMode`).

- `stylecode`: the published method, a 20-value code through the control module (`stylecode.StylecodeMode`).
"""

from stylecodes.modes.base import BatchContext, StepConditioning, StyleInput, StyleMode
from stylecodes.modes.stylecode import StylecodeMode

__all__ = ["BatchContext", "StepConditioning", "StyleInput", "StyleMode", "StylecodeMode"]
