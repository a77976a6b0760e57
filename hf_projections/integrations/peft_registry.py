"""Register a new PEFT tuner type from outside PEFT, once, however often this runs.

PEFT's own API for new methods, ``peft.utils.register_peft_method``, accepts only names already listed in the
``PeftType`` enum ("please add an entry to peft.utils.peft_types.PeftType"): the enum is closed to other packages.
:func:`add_peft_type` therefore adds a member to that enum at import time, the one patch of PEFT internals in this
package; it does nothing when PEFT already knows the name (a later PEFT may list it, or open the enum).
"""

from __future__ import annotations

from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
from peft.utils import PeftType, register_peft_method


def add_peft_type(value: str) -> PeftType:
    """The ``PeftType`` member named ``value`` (upper case), added to the enum if PEFT does not have it.

    ``PeftType`` is a ``str`` enum, so a member is a ``str`` instance of the enum class carrying ``_name_`` and
    ``_value_``; the enum finds members through ``_member_map_`` (by name: ``PeftType[value]``, iteration with
    ``_member_names_``), ``_value2member_map_`` (by value: ``PeftType(value)``) and the class attribute
    (``PeftType.VALUE``), so the member goes into all four. Idempotent.
    """
    if not value.isupper() or not value.replace("_", "").isalnum():
        raise ValueError(f"a PeftType value is an upper-case identifier, got {value!r}")
    if value in PeftType.__members__:
        return PeftType[value]
    member = str.__new__(PeftType, value)
    member._name_ = value
    member._value_ = value
    member._sort_order_ = len(PeftType._member_names_)
    PeftType._member_map_[value] = member
    PeftType._value2member_map_[value] = member
    PeftType._member_names_.append(value)
    # EnumType.__setattr__ refuses to (re)bind member names; type.__setattr__ sets the plain class attribute.
    type.__setattr__(PeftType, value, member)
    return member


def register_tuner(name: str, config_cls: type, model_cls: type, prefix: str) -> PeftType:
    """Register a tuner with PEFT (``register_peft_method``), adding its ``PeftType`` first. Idempotent: running again
    with the same classes, or with classes of the same module and name (a reloaded module), replaces nothing
    else; another method already registered under ``name`` raises a ``KeyError`` naming it."""
    peft_type = add_peft_type(name.upper())
    existing = PEFT_TYPE_TO_CONFIG_MAPPING.get(peft_type)
    if existing is None:
        register_peft_method(name=name, config_cls=config_cls, model_cls=model_cls, prefix=prefix)
        return peft_type
    if (existing.__module__, existing.__qualname__) != (config_cls.__module__, config_cls.__qualname__):
        raise KeyError(f"PEFT method {name!r} is already registered with {existing.__module__}.{existing.__qualname__}")
    PEFT_TYPE_TO_CONFIG_MAPPING[peft_type] = config_cls  # the same classes, or their reloaded versions
    PEFT_TYPE_TO_TUNER_MAPPING[peft_type] = model_cls
    PEFT_TYPE_TO_PREFIX_MAPPING[peft_type] = prefix
    return peft_type
