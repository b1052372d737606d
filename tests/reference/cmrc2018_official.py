# -*- coding: utf-8 -*-
"""The scoring of the CMRC 2018 official evaluation script, cmrc2018_evaluate.py (v5).

Follows the official script of CMRC 2018 (Cui et al. 2019, "A Span-Extraction Dataset for Chinese
Machine Reading Comprehension"; ymcui/cmrc2018, CC BY-SA 4.0) function by function:
mixed_segmentation, remove_punctuation, find_lcs, calc_f1_score and calc_em_score, with their
names, their order of operations and the script's punctuation list. Two changes, both forced by
running it on Python 3 here, neither changing a score the script computes:

- ``str(x).decode('utf-8')`` (Python 2) is ``str(x)``; the script's ``reload(sys)`` /
  ``setdefaultencoding('utf8')`` is what made its byte-string punctuation list compare equal to
  unicode characters, which Python 3 strings do anyway.
- ``nltk.word_tokenize(s)`` first splits ``s`` into sentences with NLTK's Punkt model, a data
  download (``nltk.download('punkt_tab')``) that the test machines do not have; here each
  non-Chinese run is tokenized as one sentence (``word_tokenize(s, preserve_line=True)``, the
  same NLTKWordTokenizer). The two differ only where a run holds a full stop followed by more
  text (``"a. b"`` keeps ``"a."`` whole instead of ``"a" "."``); such runs are rare in answer
  spans, and lmlab makes the same choice (its docs say so).

Test code only: tests/test_metrics_official.py compares lmlab.tasks.metrics.squad (lang="zh") with it.
"""
from __future__ import print_function

import re

from nltk.tokenize import word_tokenize


def _nltk_word_tokenize(text):
    return word_tokenize(text, preserve_line=True)


# split Chinese with English
def mixed_segmentation(in_str, rm_punc=False):
    in_str = str(in_str).lower().strip()
    segs_out = []
    temp_str = ""
    sp_char = ['-',':','_','*','^','/','\\','~','`','+','=',
               '，','。','：','？','！','“','”','；','’','《','》','……','·','、',
               '「','」','（','）','－','～','『','』']
    for char in in_str:
        if rm_punc and char in sp_char:
            continue
        if re.search(r'[\u4e00-\u9fa5]', char) or char in sp_char:
            if temp_str != "":
                ss = _nltk_word_tokenize(temp_str)
                segs_out.extend(ss)
                temp_str = ""
            segs_out.append(char)
        else:
            temp_str += char

    #handling last part
    if temp_str != "":
        ss = _nltk_word_tokenize(temp_str)
        segs_out.extend(ss)

    return segs_out


# remove punctuation
def remove_punctuation(in_str):
    in_str = str(in_str).lower().strip()
    sp_char = ['-',':','_','*','^','/','\\','~','`','+','=',
               '，','。','：','？','！','“','”','；','’','《','》','……','·','、',
               '「','」','（','）','－','～','『','』']
    out_segs = []
    for char in in_str:
        if char in sp_char:
            continue
        else:
            out_segs.append(char)
    return ''.join(out_segs)


# find longest common string
def find_lcs(s1, s2):
    m = [[0 for i in range(len(s2)+1)] for j in range(len(s1)+1)]
    mmax = 0
    p = 0
    for i in range(len(s1)):
        for j in range(len(s2)):
            if s1[i] == s2[j]:
                m[i+1][j+1] = m[i][j]+1
                if m[i+1][j+1] > mmax:
                    mmax=m[i+1][j+1]
                    p=i+1
    return s1[p-mmax:p], mmax


def calc_f1_score(answers, prediction):
    f1_scores = []
    for ans in answers:
        ans_segs = mixed_segmentation(ans, rm_punc=True)
        prediction_segs = mixed_segmentation(prediction, rm_punc=True)
        lcs, lcs_len = find_lcs(ans_segs, prediction_segs)
        if lcs_len == 0:
            f1_scores.append(0)
            continue
        precision   = 1.0*lcs_len/len(prediction_segs)
        recall      = 1.0*lcs_len/len(ans_segs)
        f1          = (2*precision*recall)/(precision+recall)
        f1_scores.append(f1)
    return max(f1_scores)


def calc_em_score(answers, prediction):
    em = 0
    for ans in answers:
        ans_ = remove_punctuation(ans)
        prediction_ = remove_punctuation(prediction)
        if ans_ == prediction_:
            em = 1
            break
    return em
