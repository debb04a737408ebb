"""lib.insight.shift: a rotated, noisy test set is flagged, one drawn like train is not."""
from lib.insight import image_stats, shift


def test_flags_a_rotated_noisy_test_set_and_not_a_like_one(comps):
    (cs, cl) = comps[0]["shifted"], comps[0]["like"]
    shifted = shift.shift_scores(cs, image_stats.image_stats(cs, workers=1)).set_index("stat")
    like = shift.shift_scores(cl, image_stats.image_stats(cl, workers=1)).set_index("stat")
    flagged = set(shifted.index[shifted["flagged"]])
    assert {"aspect", "orientation", "noise", "colourfulness", "edge_ratio", "adversarial"} <= flagged
    assert shifted.loc["adversarial", "score"] > 0.9
    assert not like["flagged"].any(), like[like["flagged"]]
    assert like.loc["adversarial", "score"] < 0.7
    assert shifted.loc["aspect", "score"] > 0.8 and like.loc["aspect", "score"] < 0.2
