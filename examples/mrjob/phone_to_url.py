"""The most plausible web page of each +1 (U.S. and Canadian) phone number in Common
Crawl's WET files.

``mapper_raw`` reads each whole ``.wet`` (or ``.wet.gz``) file with the ``warcio``
library and yields, for each phone number in a page's plain text, the page's host and
``(phone, url)``; a first reducer drops hosts with more than 1,000 numbers (directories)
and a second picks, per number, the URL on the host with the fewest. Ported from mrjob's
examples (Apache License 2.0): ``mr_phone_to_url.py``. It needs ``pip install warcio``
where its tasks run (in the image, on Kubernetes).

    kubemr run examples/mrjob/phone_to_url.py --input crawl/wet/ --output out/
    python examples/mrjob/phone_to_url.py -i crawl/wet/ -o out/
"""

import re
from itertools import islice
from urllib.parse import urlparse

import kubemr
from kubemr import MRStep

PHONE_RE = re.compile(rb"(?:[\D\b]|^)(1?[2-9]\d{2}[\-. ()+]+\d{3}[\-. ()+]+\d{4})(?:[\D\b]|$)")
PHONE_SEP_RE = re.compile(rb"[\-. ()+]")

# hosts with more than this many phone numbers are assumed to be directories
MAX_PHONES_PER_HOST = 1000


def standardize_phone_number(number):
    """put *number* in a standard format, and convert it to a :py:class:`str`."""
    number_sep = PHONE_SEP_RE.split(number)
    number = b"".join(number_sep).decode("ascii")
    if len(number) > 7:
        if number[-1] not in "0123456789":
            number = number[:-1]
        if number[0] not in "0123456789":
            number = number[1:]
    if len(number) <= 10:
        return "+1" + number
    else:
        return "+" + number


class MRPhoneToURL(kubemr.MapReduce):
    """Use Common Crawl .wet files to map from phone number to the most
    likely URL."""

    def steps(self):
        return [
            MRStep(
                mapper_raw=self.extract_phone_and_url_mapper, reducer=self.count_by_host_reducer
            ),
            MRStep(reducer=self.pick_best_url_reducer),
        ]

    def extract_phone_and_url_mapper(self, wet_path, wet_uri):
        """Read in .wet file, and extract phone ant URL"""
        from warcio.archiveiterator import ArchiveIterator

        with open(wet_path, "rb") as f:
            for record in ArchiveIterator(f):
                if record.rec_type != "conversion":
                    continue

                headers = record.rec_headers
                if headers.get_header("Content-Type") != "text/plain":
                    continue

                url = headers.get_header("WARC-Target-URI")
                if not url:
                    continue

                host = urlparse(url).netloc

                payload = record.content_stream().read()
                for phone in PHONE_RE.findall(payload):
                    phone = standardize_phone_number(phone)
                    yield host, (phone, url)

    def count_by_host_reducer(self, host, phone_urls):
        phone_urls = list(islice(phone_urls, MAX_PHONES_PER_HOST + 1))

        # don't bother with directories, etc.
        host_phone_count = len(phone_urls)
        if host_phone_count > MAX_PHONES_PER_HOST:
            return

        for phone, url in phone_urls:
            yield phone, (url, host_phone_count)

    def pick_best_url_reducer(self, phone, urls_with_count):
        # pick the url that appears on a host with the least number of
        # phone numbers, breaking ties by choosing the shortest URL
        # and the one that comes first alphabetically
        urls_with_count = sorted(urls_with_count, key=lambda uc: (uc[1], -len(uc[0]), uc[0]))

        yield phone, urls_with_count[0][0]


if __name__ == "__main__":
    MRPhoneToURL.run()
