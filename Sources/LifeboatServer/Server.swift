import Hummingbird
import HummingbirdBcrypt
import Mustache
import GRDB
