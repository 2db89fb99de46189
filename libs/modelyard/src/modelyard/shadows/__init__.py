"""Shadow auditing: pair each shadow reply with its primary, audit it, measure agreement."""

from modelyard.shadows.pairs import Pair, ShadowPairs, Side, agrees, shadow_hop_record

__all__ = ["Pair", "ShadowPairs", "Side", "agrees", "shadow_hop_record"]
